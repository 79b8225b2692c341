"""Benchmark the contrastive loss over the five VGG19 taps: native op vs eager formulations.

Variants (forward + backward of ``sum_j w_j * CL_j``, anchors require grad, K shared negatives):

- ``op``: ``csd_fast.ops.multi_tap_contrastive`` (the native op when ``csd_fast._C`` is built);
- ``reference``: ``csd_fast.losses.reference.multi_tap_contrastive_reference`` (our eager spec);
- ``official``: the official CSD ``L1_forward``: the K shared negatives repeated to
  ``[K, B, ...]``, then ``mean(|neg - student|.sum(0))`` per tap.

Times: all variants in this process, interleaved in rounds (one fwd+bwd of each per round,
after a warm-up round), at least ``--repeats`` rounds and ``--min-time`` s; the median per
variant. Peak memory is measured in a fresh subprocess per variant: on CPU the growth of the
process's peak resident set (``ru_maxrss``) over the first forward+backward, after the inputs
are allocated; on CUDA ``torch.cuda.max_memory_allocated`` above the inputs.

On CPU the op is also compared with its memory bound: the bytes it must move once (forward
reads anchors, positives, negatives; backward reads them again and writes grad_anchors) over
this machine's streaming bandwidth, measured by a sum over a 1 GiB fp32 tensor with
``--threads`` threads, timed in the same rounds as the variants (so it sees the same load). A
second set of rounds times the op's forward and backward apart, per tap (``op_breakdown``), each
against its own share of the bound. ``--l2-estimate`` prints the model of the CUDA kernels' L2
traffic (an ESTIMATE from their access pattern; no GPU involved) and exits.

    python bench/loss.py                 # patches 96 and 192, B = 16, K = 10
    python bench/loss.py --quick --out /tmp/x
    python bench/loss.py --l2-estimate --patches 192
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


def make_step(variant, taps, device):
    """One forward+backward of ``variant`` on ``taps`` = (anchors requiring grad, positives, negatives)."""
    device = torch.device(device)
    anchors, positives, negatives = taps
    loss_fn = LOSSES[variant]

    def step():
        for a in anchors:
            a.grad = None
        loss_fn(anchors, positives, negatives, WEIGHTS).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def peak_of_first_step(variant, patch, batch, k, dtype, device):
    """Peak memory growth (MiB) over the first fwd+bwd, inputs already allocated."""
    device = torch.device(device)
    step = make_step(variant, make_taps(patch, batch, k, DTYPES[dtype], device), device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    base = peak_bytes(device) if device.type == "cpu" else torch.cuda.memory_allocated(device)
    step()
    return {"peak_mib": (peak_bytes(device) - base) / 2**20}


def time_interleaved(steps, repeats, min_time):
    """Median seconds per step, the steps run in turn in rounds after one warm-up round."""
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    start = time.perf_counter()
    while len(times[next(iter(steps))]) < repeats or time.perf_counter() - start < min_time:
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(ts), len(ts)) for name, ts in times.items()}


def peak_in_subprocess(args, variant, patch, dtype):
    """One variant's first fwd+bwd in a fresh process, so its peak memory is its own."""
    command = [
        sys.executable, __file__, "--worker", variant, "--patches", str(patch), "--dtypes", dtype,
        "--batch", str(args.batch), "--k", str(args.k), "--device", args.device, "--threads", str(args.threads),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} patch {patch} {dtype} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def stream_step(gib):
    """A sum over a ``gib`` GiB fp32 tensor: one streaming read, timed beside the variants."""
    x = torch.ones(int(gib * 2**30) // 4)
    return lambda: x.sum()


def op_breakdown(taps, k, repeats, min_time, stream):
    """The native op's forward and backward (raw ops, no autograd) per tap and over all taps.

    Returns rows {tap, fwd_ms, bwd_ms, fwd_bytes, bwd_bytes} (medians over rounds that also time
    ``stream``) and the median seconds of ``stream``.
    """
    anchors, positives, negatives = ([t.detach() for t in ts] for ts in taps)
    batch, one = anchors[0].shape[0], torch.ones(())
    steps, sizes = {}, {}
    for name, sel in [*((name, [j]) for j, (name, _, _) in enumerate(TAPS)), ("all", range(len(TAPS)))]:
        a, p, n = ([x[j] for j in sel] for x in (anchors, positives, negatives))
        w = [1.0] * len(sel)
        _, nums, dens = torch.ops.csd_fast.contrastive_loss(a, p, n, w, "batch", 1e-7)
        steps[(name, "fwd")] = lambda a=a, p=p, n=n, w=w: torch.ops.csd_fast.contrastive_loss(a, p, n, w, "batch", 1e-7)
        steps[(name, "bwd")] = lambda a=a, p=p, n=n, w=w, nums=nums, dens=dens: (
            torch.ops.csd_fast.contrastive_loss_backward(one, a, p, n, nums, dens, w, "batch", 1e-7, False))
        sizes[name] = sum(x[0].numel() for x in a)  # m summed over the selected taps
    steps["stream"] = stream
    times = time_interleaved(steps, repeats, min_time)
    elem = anchors[0].element_size()
    rows = [{"tap": name, "fwd_ms": 1e3 * times[(name, "fwd")][0], "bwd_ms": 1e3 * times[(name, "bwd")][0],
             "fwd_bytes": elem * m * (2 * batch + k), "bwd_bytes": elem * m * (3 * batch + k)}
            for name, m in sizes.items()]  # fmt: skip
    return rows, times["stream"][0]


def breakdown_table(patch, dtype, rows, gbps):
    lines = [
        f"Where the op's time goes, patch {patch}, {dtype}: forward and backward ops called directly (no "
        f"autograd), per tap and all taps in one call; bound = bytes moved once (fwd reads a, p, n; bwd reads "
        f"them and writes grad_a) at {gbps:.1f} GB/s measured in the same rounds.",
        "",
        "| tap | fwd ms | fwd / bound | bwd ms | bwd / bound |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        fwd, bwd = (1e3 * r[f"{d}_bytes"] / (gbps * 1e9) for d in ("fwd", "bwd"))
        lines.append(f"| {r['tap']} | {r['fwd_ms']:.2f} | {r['fwd_ms'] / fwd:.2f}x | {r['bwd_ms']:.2f} | "
                     f"{r['bwd_ms'] / bwd:.2f}x |")  # fmt: skip
    return "\n".join(lines)


def tap_sizes(patch):
    """Elements per sample m of each VGG tap."""
    return [c * (patch // s) ** 2 for _, c, s in TAPS]


def op_bytes(patch, batch, k, elem_bytes):
    """Bytes the op must move once: fwd reads a, p, n; bwd reads them again and writes grad_a."""
    return sum(elem_bytes * m * (2 * (2 * batch + k) + batch) for m in tap_sizes(patch))


def cuda_l2_estimate(patch, batch, k, elem_bytes=4, acc_bytes=4):
    """ESTIMATE of the bytes the CUDA kernels request from L2 per tap (fwd + bwd, shared negatives).

    Mirrors csrc/cuda/contrastive_kernels.cu: tiles of 256 threads x 2 vectors of 16 bytes;
    sample groups so that tiles * groups >= 264 blocks; each block reads its anchor and positive
    tiles once per sample and its K negative tiles once (parked in shared memory); the forward
    writes and the finalize reads tiles * B * (K + 1) partial sums; each backward block reads the
    B * (K + 1) num/den values once (later reads hit L1); grad_anchor written once.
    """
    tile = 256 * 2 * 16 // elem_bytes
    rows = []
    for (name, _, _), m in zip(TAPS, tap_sizes(patch)):
        tiles = -(-m // tile)
        group_size = -(-batch // -(-264 // tiles))
        groups = -(-batch // group_size)
        unique = elem_bytes * m * (2 * (2 * batch + k) + batch)
        inputs = elem_bytes * m * (2 * (2 * batch + k * groups) + batch)
        partials = 2 * tiles * batch * (k + 1) * acc_bytes
        coefficients = tiles * groups * batch * (k + 1) * acc_bytes
        requested = inputs + partials + coefficients
        rows.append({"tap": name, "m": m, "tiles": tiles, "groups": groups, "unique_mb": unique / 1e6,
                     "requested_mb": requested / 1e6, "ratio": requested / unique})  # fmt: skip
    return rows


def l2_table(patch, batch, k):
    rows = cuda_l2_estimate(patch, batch, k)
    lines = [
        f"CUDA kernels, L2 traffic ESTIMATE (model of the access pattern, no GPU): patch {patch}, B = {batch}, "
        f"K = {k} shared, fp32, fwd+bwd, grad_positive not requested.",
        "",
        "| tap | m | tiles | sample groups | unique MB | requested from L2 MB | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['tap']} | {r['m']} | {r['tiles']} | {r['groups']} | {r['unique_mb']:.1f} | "
                     f"{r['requested_mb']:.1f} | {r['ratio']:.3f}x |")  # fmt: skip
    unique, requested = sum(r["unique_mb"] for r in rows), sum(r["requested_mb"] for r in rows)
    lines.append(f"| all | | | | {unique:.1f} | {requested:.1f} | {requested / unique:.3f}x |")
    return "\n".join(lines)


def device_name(device):
    if device == "cuda":
        return torch.cuda.get_device_name()
    model = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")] if Path("/proc/cpuinfo").exists() else []  # fmt: skip
    return model[0] if model else platform.processor() or "cpu"


def table(rows):
    """Markdown table: one row per (patch, dtype, variant), ratios against the op."""
    lines = [
        "| patch | dtype | variant | fwd+bwd ms | runs | peak MiB | time / op | peak / op | time / memory bound |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        bound = f"{r['ms'] / r['bound_ms']:.2f}x" if r.get("bound_ms") else ""
        peak_ratio = f"{r['peak_vs_op']:.2f}x" if r["peak_vs_op"] is not None else "n/a"
        lines.append(
            f"| {r['patch']} | {r['dtype']} | {r['variant']} | {r['ms']:.1f} | {r['runs']} | {r['peak_mib']:.1f} | "
            f"{r['time_vs_op']:.2f}x | {peak_ratio} | {bound} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--patches", default="96,192", help="HR patch sizes, comma-separated")
    parser.add_argument("--dtypes", default=None, help="fp32 on CPU; fp32,fp16,bf16 on CUDA")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="at least this many timed rounds")
    parser.add_argument("--min-time", type=float, default=2.0, help="and at least this many seconds of them")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch and OMP)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes (patch 32, B 2, K 3, 1 repeat)")
    parser.add_argument("--l2-estimate", action="store_true", help="print the CUDA L2 traffic model and exit")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.patches, args.batch, args.k, args.repeats, args.min_time = "32", 2, 3, 1, 0.0
    args.dtypes = args.dtypes or ("fp32,fp16,bf16" if args.device == "cuda" else "fp32")
    torch.set_num_threads(args.threads)
    if args.l2_estimate:
        print("\n\n".join(l2_table(int(p), args.batch, args.k) for p in args.patches.split(",")))
        return
    if args.worker:
        print(json.dumps(peak_of_first_step(args.worker, int(args.patches), args.batch, args.k, args.dtypes,
                                            args.device)))  # fmt: skip
        return

    load = round(os.getloadavg()[0], 2)  # the machine may be shared: timings are only as quiet as it was
    stream_gib = 0.0625 if args.quick else 1.0
    rows, gbps, breakdowns = [], [], []
    for patch in map(int, args.patches.split(",")):
        for dtype in args.dtypes.split(","):
            peaks = {v: peak_in_subprocess(args, v, patch, dtype) for v in VARIANTS}
            taps = make_taps(patch, args.batch, args.k, DTYPES[dtype], args.device)  # shared by the variants
            steps = {v: make_step(v, taps, args.device) for v in VARIANTS}
            if args.device == "cpu":
                steps["stream"] = stream_step(stream_gib)
            times = time_interleaved(steps, args.repeats, args.min_time)
            if args.device == "cpu" and ops.backend() == "native":
                parts, seconds = op_breakdown(taps, args.k, args.repeats, args.min_time, steps["stream"])
                breakdowns.append((patch, dtype, parts, stream_gib * 2**30 / seconds / 1e9))
            del steps, taps
            bound_ms = None
            if args.device == "cpu":
                gbps.append(stream_gib * 2**30 / times.pop("stream")[0] / 1e9)
                bound_ms = 1e3 * op_bytes(patch, args.batch, args.k, DTYPES[dtype].itemsize) / (gbps[-1] * 1e9)
            for v in VARIANTS:
                ms = 1e3 * times[v][0]
                rows.append({"patch": patch, "dtype": dtype, "variant": v, "ms": ms, "runs": times[v][1],
                             "peak_mib": peaks[v]["peak_mib"], "time_vs_op": ms / (1e3 * times["op"][0]),
                             "peak_vs_op": peaks[v]["peak_mib"] / peaks["op"]["peak_mib"]
                             if peaks["op"]["peak_mib"] >= 1 else None,  # RSS growth below 1 MiB: no ratio
                             "bound_ms": bound_ms if v == "op" else None})  # fmt: skip
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
        "streaming_read_gbps_per_patch": gbps,
        "op_breakdown": [{"patch": p, "dtype": d, "gbps": g, "rows": parts} for p, d, parts, g in breakdowns],
        "command": " ".join(["python bench/loss.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    md = "\n".join([
        f"# Contrastive loss (5 VGG19 taps), fwd+bwd: native op vs eager — {meta['device_name']}",
        "",
        f"torch {meta['torch']}, op backend {meta['backend']}, {args.threads} threads, B = {args.batch}, "
        f"K = {args.k} shared negatives, variants interleaved in rounds in one process, time = median of the "
        f"rounds, {meta['date']}, 1-min load average at start {load} (shared machine).",
        f"Peak memory: {memory}. `official` = official CSD `L1_forward` (negatives repeated to [K, B, ...]);",
        "`reference` = csd_fast's eager spec; ratios are variant / op (higher = op better).",
        *([f"Memory bound of the op: the bytes it must move once (fwd reads a, p, n; bwd reads them and writes "
           f"grad_a) at this machine's streaming read bandwidth, measured as the median time of a sum over a "
           f"{stream_gib:g} GiB fp32 tensor ({args.threads} threads) run in the same rounds as the variants: "
           f"{', '.join(f'{g:.1f}' for g in gbps)} GB/s (per patch)."]
          if gbps else []),
        "",
        table(rows),
        "",
        *(line for breakdown in breakdowns for line in (breakdown_table(*breakdown), "")),
        *([l2_table(patch, args.batch, args.k), ""] if args.device == "cpu" else []),
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
