"""PNG figures: training curves from the trainer's ``log.csv`` and the PSNR trade-off of the CSD
paper's Fig. 4 (PSNR vs parameters, PSNR vs time) over student widths. Matplotlib, Agg backend."""
from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

LOSS_TERMS = ("loss", "l1_student", "l1_teacher", "contrastive")
PSNR_TERMS = ("psnr_teacher", "psnr_student")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_log(log_csv) -> list[dict[str, float]]:
    """Rows of a trainer ``log.csv`` as floats (empty cells dropped), one per step in step order.

    A run killed and resumed logs the steps after its last checkpoint twice; the later row wins.
    """
    with open(log_csv, newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    return sorted({r["step"]: r for r in rows if "step" in r}.values(), key=lambda r: r["step"])


def _series(rows, key):
    pts = [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_training(log_csv, out_png) -> Path:
    """Loss terms (log scale) and validation PSNR-Y of teacher and student against the step."""
    rows = read_log(log_csv)
    if not rows:
        raise ValueError(f"log_csv: {log_csv} has no rows to plot")
    plt = _pyplot()
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(11, 4))
    for key in LOSS_TERMS:
        steps, values = _series(rows, key)
        if steps:
            ax_loss.plot(steps, values, label=key)
    ax_loss.set(xlabel="step", ylabel="value (L1 in 8-bit units)", title="training loss terms")
    if any(v > 0 for r in rows for k, v in r.items() if k in LOSS_TERMS):
        ax_loss.set_yscale("log")
    ax_loss.legend()
    has_val = False
    for key in PSNR_TERMS:
        steps, values = _series(rows, key)
        if steps:
            has_val = True
            ax_psnr.plot(steps, values, marker="o", label=key.replace("psnr_", ""))
    ax_psnr.set(xlabel="step", ylabel="PSNR-Y (dB)", title="validation PSNR")
    if has_val:
        ax_psnr.legend()
    else:
        ax_psnr.text(0.5, 0.5, "no validation set", ha="center", va="center", transform=ax_psnr.transAxes)
    return _save(fig, out_png)


def plot_tradeoff(rows: list[dict], out_png) -> Path:
    """PSNR against parameters and against milliseconds per image, one line per dataset.

    ``rows``: dicts with ``width``, ``params``, ``ms`` (per image), ``psnr`` and optionally
    ``dataset`` (each point is labelled with its width), as ``eval --plot`` produces.
    """
    if not rows:
        raise ValueError("rows: expected at least one {width, params, ms, psnr} row, got none")
    missing = {"width", "params", "ms", "psnr"} - set(rows[0])
    if missing:
        raise ValueError(f"rows: each row needs width, params, ms and psnr; missing {sorted(missing)}")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    datasets = sorted({r.get("dataset", "") for r in rows})
    for ax, key, xlabel in ((axes[0], "params", "parameters (M)"), (axes[1], "ms", "time per image (ms)")):
        for name in datasets:
            pts = sorted((r for r in rows if r.get("dataset", "") == name), key=lambda r: r["width"])
            xs = [r[key] / 1e6 if key == "params" else r[key] for r in pts]
            ax.plot(xs, [r["psnr"] for r in pts], marker="o", label=name or None)
            for x, r in zip(xs, pts):
                ax.annotate(f"{r['width']:g}x", (x, r["psnr"]), textcoords="offset points", xytext=(4, -10), fontsize=8)
        ax.set(xlabel=xlabel, ylabel="PSNR-Y (dB)")
        if any(datasets):
            ax.legend()
    axes[0].set_title("PSNR vs parameters")
    axes[1].set_title("PSNR vs speed")
    return _save(fig, out_png)


def _save(fig, out_png) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    _pyplot().close(fig)
    return out_png


def tensorboard_writer(log_dir):
    """A ``SummaryWriter`` on ``log_dir`` if ``torch.utils.tensorboard`` imports; else warn and return None
    (tensorboard is an optional dependency, not installed by csd_fast)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("tensorboard is not installed: skipping TensorBoard logs (pip install tensorboard)", stacklevel=2)
        return None
    return SummaryWriter(str(log_dir))
