"""Benchmark the contrastive loss over the five VGG19 taps: native op vs eager formulations.

Variants (forward + backward of ``sum_j w_j * CL_j``, anchors require grad, K shared negatives):

- ``op``: ``csd_fast.ops.multi_tap_contrastive`` (the native op when ``csd_fast._C`` is built);
- ``reference``: ``csd_fast.losses.reference.multi_tap_contrastive_reference`` (our eager spec);
- ``official``: the official CSD ``L1_forward``: the K shared negatives repeated to
  ``[K, B, ...]``, then ``mean(|neg - student|.sum(0))`` per tap.

Peak memory is measured in a fresh subprocess per variant: on CPU the growth of the
process's peak resident set (``ru_maxrss``) over the first forward+backward, after the inputs
are allocated; on CUDA ``torch.cuda.max_memory_allocated`` above the inputs. Times are the
median of the runs after that first one (at least ``--repeats`` runs and ``--min-time`` s).

    python bench/loss.py                 # patches 96 and 192, B = 16, K = 10
    python bench/loss.py --quick --out /tmp/x
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from csd_fast import ops
from csd_fast.fileio import atomic_write_text
from csd_fast.losses.reference import multi_tap_contrastive_reference

TAPS = [("relu1_1", 64, 1), ("relu2_1", 128, 2), ("relu3_1", 256, 4), ("relu4_1", 512, 8), ("relu5_1", 512, 16)]
WEIGHTS = [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]
VARIANTS = ("op", "reference", "official")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def official_l1_forward(students, teachers, negs, weights):
    """The official CSD contrastive loss (``L1_forward``), one materialized repeat per tap."""
    loss = 0
    for student, teacher, neg, w in zip(students, teachers, negs, weights):
        neg_i = neg.unsqueeze(0).repeat(student.shape[0], 1, 1, 1, 1).permute(1, 0, 2, 3, 4)
        d_ts = torch.mean(torch.abs(teacher.detach() - student))
        d_sn = torch.mean(torch.abs(neg_i.detach() - student).sum(0))
        loss = loss + w * d_ts / (d_sn + 1e-7)
    return loss


LOSSES = {
    "op": ops.multi_tap_contrastive,
    "reference": multi_tap_contrastive_reference,
    "official": official_l1_forward,
}


def make_taps(patch, batch, k, dtype, device):
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    shapes = [(c, patch // s, patch // s) for _, c, s in TAPS]
    anchors = [rand(batch, *s).requires_grad_() for s in shapes]
    return anchors, [rand(batch, *s) for s in shapes], [rand(k, *s) for s in shapes]


def peak_bytes(device):
    """Peak resident bytes of this process (CPU) or peak allocated bytes (CUDA)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_variant(variant, patch, batch, k, dtype, device, repeats, min_time):
    """First fwd+bwd measures peak memory, then >= ``repeats`` timed runs lasting >= ``min_time`` s."""
    device = torch.device(device)
    anchors, positives, negatives = make_taps(patch, batch, k, DTYPES[dtype], device)
    loss_fn = LOSSES[variant]

    def step():
        for a in anchors:
            a.grad = None
        loss_fn(anchors, positives, negatives, WEIGHTS).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    base = peak_bytes(device) if device.type == "cpu" else torch.cuda.memory_allocated(device)
    step()
    peak = peak_bytes(device) - base
    times = []
    while len(times) < repeats or sum(times) < min_time:
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"ms": 1e3 * statistics.median(times), "peak_mib": peak / 2**20, "runs": len(times)}


def run_in_subprocess(args, variant, patch, dtype):
    """One variant in a fresh process, so its peak memory is its own."""
    command = [
        sys.executable, __file__, "--worker", variant, "--patches", str(patch), "--dtypes", dtype,
        "--batch", str(args.batch), "--k", str(args.k), "--device", args.device,
        "--repeats", str(args.repeats), "--min-time", str(args.min_time), "--threads", str(args.threads),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} patch {patch} {dtype} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def device_name(device):
    if device == "cuda":
        return torch.cuda.get_device_name()
    model = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")] if Path("/proc/cpuinfo").exists() else []  # fmt: skip
    return model[0] if model else platform.processor() or "cpu"


def table(rows):
    """Markdown table: one row per (patch, dtype, variant), ratios against the op."""
    lines = [
        "| patch | dtype | variant | fwd+bwd ms | runs | peak MiB | time / op | peak / op |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['patch']} | {r['dtype']} | {r['variant']} | {r['ms']:.1f} | {r['runs']} | {r['peak_mib']:.1f} | "
            f"{r['time_vs_op']:.2f}x | {r['peak_vs_op']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--patches", default="96,192", help="HR patch sizes, comma-separated")
    parser.add_argument("--dtypes", default=None, help="fp32 on CPU; fp32,fp16,bf16 on CUDA")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="at least this many timed runs")
    parser.add_argument("--min-time", type=float, default=2.0, help="and at least this many seconds of them")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch and OMP)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes (patch 32, B 2, K 3, 1 repeat)")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.patches, args.batch, args.k, args.repeats, args.min_time = "32", 2, 3, 1, 0.0
    args.dtypes = args.dtypes or ("fp32,fp16,bf16" if args.device == "cuda" else "fp32")
    torch.set_num_threads(args.threads)
    if args.worker:
        shape = int(args.patches), args.batch, args.k, args.dtypes
        result = run_variant(args.worker, *shape, args.device, args.repeats, args.min_time)
        print(json.dumps(result))
        return

    load = round(os.getloadavg()[0], 2)  # the machine may be shared: timings are only as quiet as it was
    rows = []
    for patch in map(int, args.patches.split(",")):
        for dtype in args.dtypes.split(","):
            results = {v: run_in_subprocess(args, v, patch, dtype) for v in VARIANTS}
            for v in VARIANTS:
                r = results[v]
                rows.append({"patch": patch, "dtype": dtype, "variant": v, **r,
                             "time_vs_op": r["ms"] / results["op"]["ms"],
                             "peak_vs_op": r["peak_mib"] / max(results["op"]["peak_mib"], 1e-9)})  # fmt: skip
    memory = (
        "peak RSS growth (ru_maxrss) over the first fwd+bwd, fresh process per variant"
        if args.device == "cpu"
        else "torch.cuda.max_memory_allocated above the inputs, fresh process per variant"
    )
    meta = {
        "device": args.device,
        "device_name": device_name(args.device),
        "torch": torch.__version__,
        "backend": ops.backend(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "threads": args.threads,
        "load_average_1min_at_start": load,
        "batch": args.batch,
        "k": args.k,
        "repeats": args.repeats,
        "min_time_s": args.min_time,
        "taps": [f"{name}: {c}ch /{s}" for name, c, s in TAPS],
        "weights": WEIGHTS,
        "memory": memory,
        "command": " ".join(["python bench/loss.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    md = "\n".join([
        f"# Contrastive loss (5 VGG19 taps), fwd+bwd: native op vs eager — {meta['device_name']}",
        "",
        f"torch {meta['torch']}, op backend {meta['backend']}, {args.threads} threads, B = {args.batch}, "
        f"K = {args.k} shared negatives, time = median of the runs, {meta['date']}, "
        f"1-min load average at start {load} (shared machine).",
        f"Peak memory: {memory}. `official` = official CSD `L1_forward` (negatives repeated to [K, B, ...]);",
        "`reference` = csd_fast's eager spec; ratios are variant / op (higher = op better).",
        "",
        table(rows),
        "",
        f"Command: `{meta['command']}`",
    ])  # fmt: skip
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "cpu" if args.device == "cpu" else "cuda_" + "_".join(meta["device_name"].lower().split())
    atomic_write_text(out / f"loss_{tag}.json", json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    atomic_write_text(out / f"loss_{tag}.md", md + "\n")


if __name__ == "__main__":
    main()
