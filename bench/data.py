"""Benchmark the training data path: images per second at the paper setting (batch 16, HR patch 192, x4).

A DIV2K-like folder is made from the bundled photographs (``csd_fast.data.bundled_images()``),
upscaled with MATLAB bicubic so the longer side is 2040 px (DIV2K's), saved as PNG in DIV2K's
layout with x4 LR PNGs beside them. Variants, each read through
``csd_fast.data.loader.batches`` (the trainer's path) with 0 and ``--workers`` DataLoader workers:

- ``lazy, LR files``: ``DIV2K(cache=False)``: each item decodes its HR and LR PNGs;
- ``lazy, LR per patch``: ``HRFolder(cache=False)``: each item decodes its HR PNG and makes the
  LR of the patch by MATLAB bicubic (no LR files);
- ``disk cache``: ``DIV2K(cache=DIR)``: each PNG decoded once into ``DIR`` (done before timing: the
  steady state after the first epoch), items read the patch's rows from a memory-mapped ``.npy``;
- ``cached``: ``DIV2K(cache=True)``: decoded once, items are crops of uint8 images in memory.

Each measurement starts a fresh stream, takes ``--warmup`` batches (worker start-up), then times
``--batches`` batches; variants are interleaved in ``--rounds`` rounds and the median is kept.

    python bench/data.py                  # paper setting, 3 rounds
    python bench/data.py --quick --out /tmp/x
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from csd_fast.data import DIV2K, HRFolder, bicubic_downscale, bundled_images, imresize, mod_crop, save_image
from csd_fast.data.loader import batches

VARIANTS = {
    "lazy, LR files": lambda root, s, p: DIV2K(root, "train", s, p, cache=False, progress=False),
    "lazy, LR per patch": lambda root, s, p: HRFolder(root / "DIV2K_train_HR", s, p, cache=False, progress=False),
    "disk cache": lambda root, s, p: DIV2K(root, "train", s, p, cache=root / "decoded", progress=False),
    "cached": lambda root, s, p: DIV2K(root, "train", s, p, cache=True, progress=False),
}


def make_div2k_like(root: Path, scale: int, side: int) -> int:
    """Bundled training photos upscaled to a longer side of ``side``, in DIV2K's layout; returns the count."""
    hr_dir, lr_dir = root / "DIV2K_train_HR", root / "DIV2K_train_LR_bicubic" / f"X{scale}"
    images = bundled_images("train")
    for i, (_, img) in enumerate(images, 1):
        h, w = img.shape[1:]
        f = side / max(h, w)
        hr = mod_crop(imresize(img, size=(round(h * f), round(w * f))).clamp(0, 1), scale)
        save_image(hr, hr_dir / f"{i:04d}.png")
        save_image(bicubic_downscale(hr, scale).clamp(0, 1), lr_dir / f"{i:04d}x{scale}.png")
    return len(images)


def measure(dataset, batch: int, workers: int, warmup: int, timed: int, start_step: int) -> float:
    """Images per second over ``timed`` batches of a fresh stream, after ``warmup`` batches."""
    stream = batches(dataset, batch, seed=0, start_step=start_step, num_workers=workers)
    for _ in range(warmup):
        next(stream)
    t0 = time.perf_counter()
    for _ in range(timed):
        next(stream)
    rate = timed * batch / (time.perf_counter() - t0)
    del stream  # shuts the workers down
    return rate


def cpu_name() -> str:
    model = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")] if Path("/proc/cpuinfo").exists() else []  # fmt: skip
    return model[0] if model else platform.processor() or "cpu"


def table(rows: list[dict], workers: int) -> str:
    lines = [f"| variant | images/s, 0 workers | images/s, {workers} workers | {workers} workers / 0 | batches/s at {workers} workers |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['rate_0']:.1f} | {r['rate_w']:.1f} | {r['rate_w'] / r['rate_0']:.2f}x | "
                     f"{r['rate_w'] / r['batch']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=192, help="HR patch side")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--side", type=int, default=2040, help="longer side of the DIV2K-like images")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="batches before timing (worker start-up)")
    parser.add_argument("--batches", type=int, default=6, help="timed batches per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", default=None, help="where to write the DIV2K-like folder (default: a temp dir)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes (side 256, patch 64, batch 4, 1 round)")
    args = parser.parse_args(argv)
    if args.quick:
        args.side, args.patch, args.batch, args.warmup, args.batches, args.rounds = 256, 64, 4, 1, 1, 1
    torch.set_num_threads(1)  # as a DataLoader worker runs; the main process reads at 0 workers
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        n_images = make_div2k_like(root, args.scale, args.side)
        datasets = {name: make(root, args.scale, args.patch) for name, make in VARIANTS.items()}
        for i in range(len(datasets["disk cache"])):  # the first epoch fills the disk cache
            datasets["disk cache"][i]
        load = round(os.getloadavg()[0], 2)
        rates = {(v, w): [] for v in VARIANTS for w in (0, args.workers)}
        for r in range(args.rounds):
            for v, ds in datasets.items():
                for w in (0, args.workers):
                    rate = measure(ds, args.batch, w, args.warmup, args.batches, start_step=r * 100)
                    rates[(v, w)].append(rate)
                    print(f"round {r + 1}: {v}, {w} workers: {rate:.1f} images/s", flush=True)
    rows = [{"variant": v, "batch": args.batch, "rate_0": statistics.median(rates[(v, 0)]),
             "rate_w": statistics.median(rates[(v, args.workers)]),
             "rounds_0": rates[(v, 0)], "rounds_w": rates[(v, args.workers)]} for v in VARIANTS]
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_name(), "cpus": os.cpu_count(), "torch": torch.__version__, "images": n_images,
        "side": args.side, "scale": args.scale, "batch": args.batch, "patch": args.patch, "workers": args.workers,
        "warmup": args.warmup, "batches": args.batches, "rounds": args.rounds, "load_average_1min_at_start": load,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, "rows": rows}
    (out / "data_cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    command = " ".join(["python bench/data.py", *(sys.argv[1:] if argv is None else argv)])
    md = "\n".join([
        f"# Training data path: images/s at batch {args.batch}, HR patch {args.patch}, x{args.scale} — {meta['cpu']}",
        "",
        f"{meta['date']}, torch {meta['torch']}, {meta['cpus']} CPUs, 1-min load average at start {load} (shared "
        f"machine). {n_images} bundled photos upscaled to a longer side of {args.side} px (DIV2K-like PNGs, x{args.scale} "
        f"LR PNGs beside them), read through `csd_fast.data.loader.batches`; median of {args.rounds} interleaved "
        f"rounds of {args.batches} timed batches after {args.warmup} warm-up batches. Training is data-bound when a "
        f"step takes less than 1 / (batches/s); without workers the reading adds to every step.",
        "",
        table(rows, args.workers),
        "",
        f"Command: `{command}`",
        "",
    ])
    (out / "data_cpu.md").write_text(md)
    print(md)
    return report


if __name__ == "__main__":
    main()
