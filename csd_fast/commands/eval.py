"""``csd-fast eval``: PSNR-Y / SSIM-Y (crop = scale) of teacher and student on test sets, a
paper-style table, CSV + JSON, and optionally the PSNR trade-off plot over widths."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import torch

from ..data import imresize
from ..inference import upscale_tensor
from ..metrics import psnr_y, ssim_y
from ..student_io import load_model
from .common import accelerated, eval_sets, fast_options, model_hints, network_at, resolve_device

PLOT_WIDTHS = (0.25, 0.5, 0.75, 1.0)
FIELDS = ("dataset", "model", "width", "params", "psnr", "ssim", "ms", "images")


def evaluate(fn, dataset, scale: int, device, tile=None, overlap=16, ensemble=False) -> dict:
    """Mean PSNR-Y, SSIM-Y and milliseconds per image of ``fn`` over a whole-image ``(lr, hr)`` set."""
    psnr = ssim = ms = 0.0
    upscale_tensor(fn, dataset[0][0][None, :, :16, :16].to(device), scale)  # warm-up: first-call costs stay out of ms
    for lr, hr in dataset:
        lr, hr = lr[None].to(device), hr[None].to(device)
        start = time.perf_counter()
        sr = upscale_tensor(fn, lr, scale, tile, overlap, ensemble)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ms += 1000 * (time.perf_counter() - start)
        psnr += psnr_y(sr, hr, crop_border=scale)
        ssim += ssim_y(sr, hr, crop_border=scale)
    n = len(dataset)
    return {"psnr": psnr / n, "ssim": ssim / n, "ms": ms / n, "images": n}


def _networks(loaded, widths, ensemble: bool, fast: dict | None = None):
    """``[(label, width, fn, params)]`` for each width of the model file (teacher = 1.0); ``fast``:
    ``accelerate`` options, so the times are the fast path's."""
    nets = []
    for w in widths:
        net, width = network_at(loaded, w)
        label = ("teacher" if width == 1.0 and loaded.kind != "student" else f"student x{width:g}") + ("+" if ensemble else "")
        nets.append((label, width, accelerated(net, fast) if fast else net, sum(p.numel() for p in net.parameters())))
    return nets


def _rows(nets, sets, scale, device, args) -> list[dict]:
    """One row per (network, dataset); bicubic (width 0) never self-ensembles."""
    rows = []
    tile = None if args.fast else args.tile  # a FastStudent tiles itself
    for label, width, fn, params in nets:
        for name, dataset in sets:
            scores = evaluate(fn, dataset, scale, device, tile, args.tile_overlap, args.self_ensemble and width > 0)
            rows.append({"dataset": name, "model": label, "width": width, "params": params, **scores})
    return rows


def format_table(rows: list[dict], scale: int) -> str:
    """Models as rows, datasets as ``PSNR / SSIM`` columns, like the tables of SR papers."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    cell = {(r["model"], r["dataset"]): f"{r['psnr']:.2f} / {r['ssim']:.4f}" for r in rows}
    params = {r["model"]: r["params"] for r in rows}
    head = f"{'x' + str(scale):<16}{'params':>10}  " + "".join(f"{d:>18}" for d in datasets)
    lines = [head, f"{'':<16}{'':>10}  " + "".join(f"{'PSNR / SSIM':>18}" for _ in datasets), "-" * len(head)]
    for m in models:
        p = "-" if not params[m] else f"{params[m] / 1e6:.2f}M" if params[m] >= 1e5 else f"{params[m] / 1e3:.1f}K"
        lines.append(f"{m:<16}{p:>10}  " + "".join(f"{cell.get((m, d), '-'):>18}" for d in datasets))
    return "\n".join(lines)


def _write(rows: list[dict], out_dir: Path, stem: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / f"{stem}.json").write_text(json.dumps(rows, indent=2) + "\n")


@torch.no_grad()
def run(args) -> int:
    fast = fast_options(args)
    device = resolve_device(args.device)
    loaded = load_model(args.model, device=device, **model_hints(args))
    if args.plot and loaded.kind == "student":
        raise ValueError("--plot: needs a checkpoint or teacher (a student file has only its own width)")
    scale = loaded.model.scale
    sets = eval_sets(args.data, scale, args.data_root, args.strict, args.max_side)
    out_dir = Path(args.out)
    if loaded.kind == "student":
        widths = args.width or [None]
    else:
        widths = sorted({1.0, *(args.width or [loaded.width or 1.0])}, reverse=True)
    bicubic = ("bicubic", 0.0, lambda x: imresize(x, scale=scale), 0)
    nets = _networks(loaded, widths, args.self_ensemble, fast)
    rows = _rows([bicubic, *nets], sets, scale, device, args)
    how = f"; fast path: {nets[0][2].backend} backend, {nets[0][2].dtype}" if fast else ""
    print(f"{args.model}: {loaded.model.arch} ({loaded.kind}), PSNR-Y / SSIM-Y, crop {scale}{how}")
    print(format_table(rows, scale))
    _write(rows, out_dir, "eval")
    print(f"wrote {out_dir / 'eval.csv'} and {out_dir / 'eval.json'}")
    if args.plot:
        from ..plots import plot_tradeoff

        done = [r for r in rows if r["width"] in PLOT_WIDTHS]
        todo = [w for w in PLOT_WIDTHS if w not in {r["width"] for r in done}]
        plot_rows = done + _rows(_networks(loaded, todo, args.self_ensemble, fast), sets, scale, device, args)
        _write(plot_rows, out_dir, "tradeoff")
        print(f"wrote {plot_tradeoff(plot_rows, out_dir / 'tradeoff.png')}")
    return 0
