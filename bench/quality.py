"""Quality ablation on the bundled photographs: does contrastive self-distillation help the student?

Variants, each trained for the same number of steps on the same seeded batches (bundled
``train`` split, random patches) and scored on the held-out ``test`` split (whole images,
PSNR-Y / SSIM-Y, ``crop_border = scale``); one row per variant, mean ± sample std over seeds:

- ``student alone``: the width-r architecture as its own model, L1 only;
- ``J-T``: joint training of teacher and student (``CSDTrainer``, lambda_c = 0);
- ``CSD``: official negatives (the batch's first K LR images, shared by every anchor);
- ``CSD others``: per-sample negatives (K other images of the batch per anchor);
- ``DCKD dynamic``: the history model's outputs on degraded LR (``negatives="dynamic"``,
  lambda_dcl 0.1 for [0, 1] images, N negatives per anchor, EMA decay and refresh intervals the preset's or scaled to the run with
  ``csd_fast.history.scaled_schedule``).

Every seed gives the same initial shared model to the joint variants and the same batches to
all. The contrastive variants share one encoder (VGG19 from ``--vgg-weights`` or torch's hub
cache; else a fixed-seed random VGG19, which the results record). Nothing is tuned on the
held-out images: ``--split val`` scores three training images (``VAL_NAMES``, left out of
training) instead, for trying other settings.

    python bench/quality.py --quick          # 2 CPU cores, a few minutes
    python bench/quality.py --preset medium  # 2 CPU cores, <= 60 minutes: the demo's recipe, 3 seeds
    python bench/quality.py                  # GPU preset
    python bench/quality.py --quick --split val --variants "DCKD dynamic" --lambda-dcl 0.01
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from csd_fast.data import PatchDataset, SRDataset, bundled_images
from csd_fast.demo import LAMBDA_C_PRETRAINED, LAMBDA_C_RANDOM_VGG
from csd_fast.fileio import atomic_write_text
from csd_fast.history import scaled_schedule
from csd_fast.losses import ContrastiveLoss
from csd_fast.metrics import psnr_y, ssim_y
from csd_fast.models import build_model
from csd_fast.trainer import CSDTrainer

PRESETS = {
    "quick": dict(arch="edsr", model=dict(n_feats=32, n_resblocks=2, res_scale=1.0), scale=2, width=0.25,
                  patch=16, batch=8, neg_num=4, steps=150, lr=5e-4, seeds=(0, 1), max_side=256, threads=1, dynamic_neg_num=5),
    # The demo's recipe (csd_fast.demo) at 600 steps for every variant, 3 seeds: <= 60 min on 2 CPU cores
    # (DCKD with N = 2). Chosen on --split val, one seed, 600 steps: DCKD's lambda_dcl at the random-VGG
    # rule's 0.01 ended 0.21 dB below bicubic (30.08 vs 30.29), at 0.001 level with J-T (30.51 vs 30.52).
    "medium": dict(arch="edsr", model=dict(n_feats=64, n_resblocks=4, res_scale=1.0), scale=2, width=0.25,
                   patch=48, batch=8, neg_num=4, steps=600, lr=1e-3, seeds=(0, 1, 2), max_side=None, threads=2, dynamic_neg_num=2,
                   lambda_dcl=0.001, dynamic=dict(decay=0.99, intervals=(100, 200, 300), schedule="thirds")),
    "full": dict(arch="edsr", model=dict(n_feats=64, n_resblocks=16, res_scale=1.0), scale=4, width=0.25,
                 patch=192, batch=16, neg_num=10, steps=20_000, lr=1e-4, seeds=(0, 1, 2), max_side=None, threads=1, dynamic_neg_num=5),
}  # fmt: skip
DCKD_LAMBDA_DCL = 0.1  # DCKD's contrastive weight for [0, 1] images (its official configs)
VAL_NAMES = ("camera", "gravel", "motorcycle_left")  # train images scored by --split val
VARIANTS = ("student alone", "J-T", "CSD", "CSD others", "DCKD dynamic")


def variant_trainer(variant: str, cfg: dict, seed: int, contrastive: ContrastiveLoss, device) -> CSDTrainer:
    """A fresh, seeded trainer for one variant."""
    torch.manual_seed(seed)
    model = build_model(cfg["arch"], cfg["scale"], preset=None, **cfg["model"])
    common = dict(lr=cfg["lr"], seed=seed, device=device, progress=False, contrastive=contrastive)
    if variant == "student alone":
        torch.manual_seed(seed)
        alone = type(model)(**model.compact_config(cfg["width"]))
        return CSDTrainer(alone, width=1.0, lambda_t=0.0, lambda_c=0.0, **common)
    options = {
        "J-T": dict(lambda_c=0.0),
        "CSD": dict(negatives="official", neg_num=cfg["neg_num"], lambda_c=cfg["lambda_c"]),
        "CSD others": dict(negatives="others", neg_num=cfg["neg_num"], lambda_c=cfg["lambda_c"]),
        "DCKD dynamic": dict(negatives="dynamic", dynamic_options=dynamic_schedule(cfg), neg_num=cfg["dynamic_neg_num"],
                             lambda_c=cfg["lambda_dcl"] * 255),
    }[variant]
    return CSDTrainer(model, width=cfg["width"], **options, **common)


def dynamic_schedule(cfg: dict) -> dict:
    """The history model's EMA decay and refresh intervals: the preset's, else the paper's scaled to the run."""
    return cfg.get("dynamic") or scaled_schedule(cfg["steps"])


def image_split(split: str, max_side: int | None) -> tuple[list, list]:
    """(train images, scored images): the bundled train/test splits, or for ``"val"`` the train split
    without ``VAL_NAMES``, which are scored instead (for choosing settings without the test split)."""
    train = bundled_images("train", max_side=max_side)
    if split == "val":
        return [t for t in train if t[0] not in VAL_NAMES], [t for t in train if t[0] in VAL_NAMES]
    return train, bundled_images("test", max_side=max_side)


@torch.no_grad()
def evaluate(trainer: CSDTrainer, test_set, device) -> dict[str, float]:
    """Mean PSNR-Y / SSIM-Y of the trained student over the held-out images."""
    student = trainer.export().to(device).eval()
    psnr, ssim = [], []
    for lr, hr in test_set:
        sr = student(lr[None].to(device)).clamp(0, 1)  # as the metric clamps: a diverged student is scored, not refused
        psnr.append(psnr_y(sr, hr[None].to(device), crop_border=trainer.model.scale))
        ssim.append(ssim_y(sr, hr[None].to(device), crop_border=trainer.model.scale))
    return {"psnr_y": statistics.fmean(psnr), "ssim_y": statistics.fmean(ssim)}


def bicubic_scores(test_set, scale: int) -> dict[str, float]:
    psnr, ssim = [], []
    for lr, hr in test_set:
        sr = F.interpolate(lr[None], scale_factor=scale, mode="bicubic", align_corners=False)
        psnr.append(psnr_y(sr, hr[None], crop_border=scale))
        ssim.append(ssim_y(sr, hr[None], crop_border=scale))
    return {"psnr_y": statistics.fmean(psnr), "ssim_y": statistics.fmean(ssim)}


def summarize(runs: list[dict]) -> dict:
    out = {}
    for key in ("psnr_y", "ssim_y"):
        values = [r[key] for r in runs]
        out[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "values": values}  # fmt: skip
    out["seconds"] = statistics.fmean(r["seconds"] for r in runs)
    return out


def device_tag(device: torch.device) -> tuple[str, str]:
    """(file tag, readable name): ``cpu`` or ``cuda_<gpu name>``."""
    if device.type != "cuda":
        return "cpu", "cpu"
    name = torch.cuda.get_device_name(device)
    return "cuda_" + "_".join(name.lower().split()), name


def markdown(meta: dict, results: dict) -> str:
    lines = [
        f"# Quality ablation ({meta['preset']} preset) — {meta['device_name']}",
        "",
        f"torch {meta['torch']}, {meta['date']}. {meta['arch']} {meta['model']} x{meta['scale']}, student width "
        f"{meta['width']}; {meta['steps']} steps, batch {meta['batch']}, HR patch {meta['patch']}, lr {meta['lr']}, "
        f"K = {meta['neg_num']}, lambda_c {meta['lambda_c']} (CSD), N = {meta['dynamic_neg_num']} (DCKD: lambda_dcl {meta['lambda_dcl']:g}, "
        f"{meta['dynamic_options']}); seeds {meta['seeds']}; "
        f"{meta['threads']} threads. VGG19 {'pretrained' if meta['vgg_pretrained'] else 'RANDOM (no weights found)'}.",
        f"Scored: bundled {meta['split']} images {meta['test_images']} (max side {meta['max_side']}), whole images, "
        f"crop_border = {meta['scale']}. Mean ± sample std over seeds. Whole run: {meta['total_minutes']:.1f} min.",
        "",
        "| variant | PSNR-Y (dB) | SSIM-Y | per seed PSNR-Y | s / run |",
        "|---|---:|---:|---|---:|",
        f"| bicubic | {meta['bicubic']['psnr_y']:.3f} | {meta['bicubic']['ssim_y']:.4f} | | |",
    ]
    for name, r in results.items():
        seeds = ", ".join(f"{v:.3f}" for v in r["psnr_y"]["values"])
        lines.append(
            f"| {name} | {r['psnr_y']['mean']:.3f} ± {r['psnr_y']['std']:.3f} | "
            f"{r['ssim_y']['mean']:.4f} ± {r['ssim_y']['std']:.4f} | {seeds} | {r['seconds']:.0f} |"
        )
    if {"CSD", "J-T"} <= set(results):
        delta = results["CSD"]["psnr_y"]["mean"] - results["J-T"]["psnr_y"]["mean"]
        lines += ["", f"CSD - J-T (mean PSNR-Y over seeds): {delta:+.3f} dB."]
    if not meta["vgg_pretrained"]:
        lines += ["", "The contrastive variants used a fixed-seed RANDOM VGG19 (no network here to fetch weights): "
                  "this is not the paper's setting, whose VGG19 is ImageNet-pretrained; its features carry no "
                  "perceptual meaning, so these rows say nothing about CSD's gain with the real encoder."]
    lines += ["", f"Command: `{meta['command']}`"]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="full",
                        help="quick: a few minutes on 2 CPU cores; medium: <= 60 min on 2 CPU cores; full: GPU")
    parser.add_argument("--quick", action="store_true", help="same as --preset quick")
    parser.add_argument("--steps", type=int, help="override the preset's step budget")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds (>= 2 for a spread)")
    parser.add_argument("--patch", type=int, help="override the preset's HR patch size")
    parser.add_argument("--max-side", type=int, help="override the preset's image size cap (longer side)")
    parser.add_argument("--split", choices=["test", "val"], default="test",
                        help="score on the held-out test split, or on train images held out for choosing settings")
    parser.add_argument("--dynamic-decay", type=float, help="override the history model's EMA decay")
    parser.add_argument("--dynamic-intervals", type=int, nargs="+", help="override the history refresh intervals")
    parser.add_argument("--lambda-dcl", type=float, help="DCKD's contrastive weight for [0, 1] images (default 0.1, 0.01 with the random VGG19)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--vgg-weights", help="torchvision vgg19-dcbb9e9d.pth")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="CPU threads (default: the preset's)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    preset = "quick" if args.quick else args.preset
    cfg = dict(PRESETS[preset])
    for key in ("steps", "seeds", "patch", "max_side", "lambda_dcl", "threads"):
        if getattr(args, key) is not None:
            cfg[key] = tuple(args.seeds) if key == "seeds" else getattr(args, key)
    if args.dynamic_decay is not None or args.dynamic_intervals:
        base = dynamic_schedule(cfg)
        cfg["dynamic"] = {"decay": base["decay"] if args.dynamic_decay is None else args.dynamic_decay,
                          "intervals": tuple(args.dynamic_intervals or base["intervals"])}  # fmt: skip
    torch.set_num_threads(cfg["threads"])
    device = torch.device(args.device)

    train_images, held_out = image_split(args.split, cfg["max_side"])
    train = PatchDataset([img for _, img in train_images], cfg["scale"], cfg["patch"], repeat=50)
    test_set = SRDataset([(name, img, None) for name, img in held_out], cfg["scale"], progress=False)
    test_pairs = [test_set[i] for i in range(len(test_set))]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        contrastive = ContrastiveLoss(vgg_weights=args.vgg_weights).to(device)
    # With the random VGG19 both contrastive weights are cut 10x (the demo's rule, see csd_fast.demo).
    cfg["lambda_c"] = LAMBDA_C_PRETRAINED if contrastive.encoder.pretrained else LAMBDA_C_RANDOM_VGG
    cfg.setdefault("lambda_dcl", DCKD_LAMBDA_DCL * cfg["lambda_c"] / LAMBDA_C_PRETRAINED)

    results, run_start = {}, time.perf_counter()
    for variant in args.variants:
        runs = []
        for seed in cfg["seeds"]:
            trainer = variant_trainer(variant, cfg, seed, contrastive, device)
            start = time.perf_counter()
            trainer.fit(train, steps=cfg["steps"], batch_size=cfg["batch"])
            scores = {**evaluate(trainer, test_pairs, device), "seconds": time.perf_counter() - start}
            print(f"{variant:>14} seed {seed}: PSNR-Y {scores['psnr_y']:.3f}  SSIM {scores['ssim_y']:.4f}  "
                  f"({scores['seconds']:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
            runs.append(scores)
        results[variant] = summarize(runs)

    tag, name = device_tag(device)
    meta = {
        "preset": preset, "device": device.type, "device_name": name, "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "dynamic_options": {k: list(v) if isinstance(v, tuple) else v for k, v in dynamic_schedule(cfg).items()},
        "vgg_pretrained": contrastive.encoder.pretrained, "split": args.split, "test_images": [n for n, _ in held_out],
        "bicubic": bicubic_scores(test_pairs, cfg["scale"]), "total_minutes": (time.perf_counter() - run_start) / 60,
        "command": " ".join(["python bench/quality.py", *(argv if argv is not None else sys.argv[1:])]),
    }  # fmt: skip
    report = {**meta, "results": results}
    md = markdown(meta, results)
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{preset}_{tag}" + ("" if args.split == "test" else "_val")
    atomic_write_text(out / f"quality_{tag}.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / f"quality_{tag}.md", md + "\n")
    return report


if __name__ == "__main__":
    main()
