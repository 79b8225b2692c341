"""Training-step time and peak memory: ``CSDTrainer.train_step`` vs an eager official-style step.

Both variants train the same model (same initial weights) on the same batch with the same K
official negatives (K LR images of the batch, bicubic-upsampled), Adam, L1 terms in 8-bit units:

- ``csd_fast``: ``CSDTrainer.train_step``: negative features computed once under ``no_grad``,
  shared ``[K, ...]`` (never repeated per anchor), the contrastive op (``csd_fast.ops``);
- ``official``: the official CSD step re-created eagerly: teacher and student forward through
  the same slimmable model, ``vgg(teacher)`` (detached only at its features, as the official
  ``t_detach``), ``vgg(student)``, ``vgg(neg)``; per tap the negatives are repeated to
  ``[K, B, ...]`` and ``d_sn = mean(|neg - student|.sum(0))``, ``d_ts = l1(teacher, student)``.

Each variant runs in fresh subprocesses, ``--rounds`` times in alternating order (so that load
from other processes on a shared machine hits both alike): one warm-up step (peak memory) then
``--steps`` timed steps; the step time is the median over all rounds' timed steps. Peak memory
on CPU: the process's peak resident set (``ru_maxrss``) after the warm-up step minus its
resident set just before it (model, optimizer, VGG and batch already allocated); on CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before the step.
Ratios are official / csd_fast from one invocation (higher = csd_fast better). The first
step's loss of both variants is recorded: they compute the same objective.

    python bench/train.py                # EDSR-baseline 64x16 x4, width 0.25, B 16, HR 96, K 10
    python bench/train.py --quick        # tiny sizes
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from csd_fast import ops
from csd_fast.fileio import atomic_write_text
from csd_fast.losses import TAP_WEIGHTS, ContrastiveLoss
from csd_fast.models import build_model
from csd_fast.negatives import bicubic_upsample
from csd_fast.trainer import CSDTrainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loss import official_l1_forward  # noqa: E402  (the official formula, shared with bench/loss.py)

VARIANTS = ("csd_fast", "official")
CONFIGS = {
    "target": dict(n_feats=64, n_resblocks=16, scale=4, width=0.25, batch=16, patch=96, k=10),
    "quick": dict(n_feats=16, n_resblocks=2, scale=2, width=0.25, batch=4, patch=32, k=3),
}


def official_step(trainer: CSDTrainer, lr, hr):
    """One official-style optimizer step on ``trainer``'s model, optimizer and VGG; returns the loss."""
    model, opt, pr = trainer.model, trainer.optimizer, trainer.pixel_range
    opt.zero_grad(set_to_none=True)
    teacher, student = model(lr, 1.0), model(lr, trainer.width)
    loss = F.l1_loss(student, hr) * pr + trainer.lambda_t * F.l1_loss(teacher, hr) * pr
    gen = trainer.step_generator(trainer.step_count + 1)  # this step's draw, as train_step
    perm = torch.randperm(trainer.neg_num, generator=gen).to(lr.device)  # the official lr[randperm(neg_num)]
    neg = bicubic_upsample(lr[perm], model.scale)
    vgg = trainer.contrastive.encoder  # vgg(teacher) keeps its graph: the official code detaches only its features
    loss = loss + trainer.lambda_c * official_l1_forward(vgg(student), vgg(teacher), vgg(neg), TAP_WEIGHTS)
    loss.backward()
    opt.step()
    return loss.item()


def memory_now(device) -> int:
    """Resident bytes now (CPU, /proc/self/statm) or allocated bytes (CUDA)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_peak(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run_variant(variant: str, cfg: dict, device: str, steps: int, vgg_weights: str | None) -> dict:
    """Warm-up step (peak memory, loss) then ``steps`` timed steps, in this process."""
    device = torch.device(device)
    torch.manual_seed(0)
    model = build_model("edsr", cfg["scale"], preset=None, n_feats=cfg["n_feats"], n_resblocks=cfg["n_resblocks"],
                        res_scale=1.0)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        contrastive = ContrastiveLoss(vgg_weights=vgg_weights)
    trainer = CSDTrainer(model, width=cfg["width"], neg_num=cfg["k"], contrastive=contrastive, device=device,
                         progress=False)  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    lp = cfg["patch"] // cfg["scale"]
    lr = torch.rand(cfg["batch"], 3, lp, lp, generator=gen).to(device)
    hr = torch.rand(cfg["batch"], 3, cfg["patch"], cfg["patch"], generator=gen).to(device)

    def step() -> float:
        loss = official_step(trainer, lr, hr) if variant == "official" else trainer.train_step(lr, hr)["loss"]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return loss

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    before, setup_peak = memory_now(device), memory_peak(device)
    first_loss = step()
    peak = memory_peak(device) - before
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {
        "ms": 1e3 * statistics.median(times), "times_ms": [1e3 * t for t in times], "peak_mib": peak / 2**20,
        "setup_peak_above_base_mib": max(0, setup_peak - before) / 2**20, "first_loss": first_loss,
    }  # fmt: skip


def run_in_subprocess(variant: str, args) -> dict:
    """One variant in a fresh process, so its peak memory is its own."""
    command = [sys.executable, __file__, "--worker", variant, "--device", args.device, "--steps", str(args.steps),
               "--threads", str(args.threads)] + (["--quick"] if args.quick else [])  # fmt: skip
    if args.vgg_weights:
        command += ["--vgg-weights", args.vgg_weights]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"bench/train.py worker {variant!r} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved(args) -> dict:
    """``--rounds`` rounds of one subprocess per variant, the order alternating, so that load from
    other processes on a shared machine hits both variants alike; per variant: the median step
    time over all rounds, the median peak memory, and the per-round values."""
    rounds = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for v in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            rounds[v].append(run_in_subprocess(v, args))
    return {
        v: {
            "ms": statistics.median(t for run in runs for t in run["times_ms"]),
            "peak_mib": statistics.median(run["peak_mib"] for run in runs),
            "first_loss": runs[0]["first_loss"],
            "rounds": runs,
        }
        for v, runs in rounds.items()
    }


def device_tag(device: str) -> tuple[str, str]:
    """(file tag, readable name): ``cpu`` or ``cuda_<gpu name>``."""
    if device != "cuda":
        return "cpu", "cpu"
    name = torch.cuda.get_device_name()
    return "cuda_" + "_".join(name.lower().split()), name


def markdown(meta: dict, results: dict) -> str:
    c, o = results["csd_fast"], results["official"]
    return "\n".join([
        f"# Training step: CSDTrainer vs official-style eager step — {meta['device_name']}",
        "",
        f"torch {meta['torch']}, contrastive op backend {meta['backend']}, {meta['threads']} thread(s), {meta['date']}.",
        f"EDSR {meta['n_feats']}x{meta['n_resblocks']} x{meta['scale']} (teacher), student width {meta['width']}, "
        f"batch {meta['batch']}, HR patch {meta['patch']}, K = {meta['k']} official negatives, "
        f"{meta['rounds']} rounds (a fresh process per variant, alternating order), each a warm-up step then "
        f"{meta['steps']} timed steps; median over all timed steps.",
        f"Peak memory: {meta['memory']}.",
        "",
        "| variant | step ms | peak MiB | first-step loss |",
        "|---|---:|---:|---:|",
        f"| csd_fast (CSDTrainer.train_step) | {c['ms']:.0f} | {c['peak_mib']:.0f} | {c['first_loss']:.6g} |",
        f"| official-style eager | {o['ms']:.0f} | {o['peak_mib']:.0f} | {o['first_loss']:.6g} |",
        "",
        f"Speed-up (official / csd_fast time): **{meta['speedup']:.2f}x**; "
        f"peak-memory ratio (official / csd_fast): **{meta['memory_ratio']:.2f}x** (median over rounds).",
        "Per-round step-time ratios (official / csd_fast): "
        + ", ".join(f"{o_r['ms'] / c_r['ms']:.2f}x" for c_r, o_r in zip(c["rounds"], o["rounds"])) + ".",
        "",
        f"Command: `{meta['command']}`",
    ])  # fmt: skip


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (EDSR 16x2 x2, B 4, HR 32, K 3)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps after the warm-up step, per round")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per variant, run alternately")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (1: on shared cores more threads oversubscribe and run slower)")
    parser.add_argument("--vgg-weights", help="torchvision vgg19-dcbb9e9d.pth (speed does not depend on it)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cfg = CONFIGS["quick" if args.quick else "target"]
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(run_variant(args.worker, cfg, args.device, args.steps, args.vgg_weights)))
        return {}

    results = interleaved(args)
    tag, name = device_tag(args.device)
    memory = (
        "growth of the peak resident set (ru_maxrss) over the warm-up step, above the resident set "
        "just before it; fresh process per variant"
        if args.device == "cpu"
        else "torch.cuda.max_memory_allocated over the warm-up step, above the allocation before it; fresh process per variant"
    )
    meta = {
        "config": "quick" if args.quick else "target", **cfg, "device": args.device, "device_name": name,
        "torch": torch.__version__, "backend": ops.backend(), "threads": args.threads, "steps": args.steps,
        "rounds": args.rounds,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "memory": memory,
        "speedup": results["official"]["ms"] / results["csd_fast"]["ms"],
        "memory_ratio": results["official"]["peak_mib"] / max(results["csd_fast"]["peak_mib"], 1e-9),
        "command": " ".join(["python bench/train.py", *(argv if argv is not None else sys.argv[1:])]),
    }  # fmt: skip
    md = markdown(meta, results)
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"train_{tag}.json", json.dumps({**meta, "results": results}, indent=2) + "\n")
    atomic_write_text(out / f"train_{tag}.md", md + "\n")
    return {**meta, "results": results}


if __name__ == "__main__":
    main()
