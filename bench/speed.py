"""Inference speed of the fast student (``csd_fast.fast.accelerate``) against its baselines.

For each student (EDSR paper model at widths 0.5 and 0.25, RCAN at 0.25, CARN at 0.5), scale
(x2, x4) and size (LR inputs giving 720p and 1080p outputs on CUDA), ms/image (median of
``--repeats`` after warm-up) of:

- ``fast``: ``FastStudent`` (Triton kernels + CUDA graphs on CUDA; the eager channels_last path on CPU);
- ``official``: the full model sliced at every call, ``model(x, width)``, as the official code runs it;
- ``exported``: the eager exported student, channels_last, same dtype;
- ``compiled``: ``torch.compile(exported, mode="max-autotune")`` (CUDA only here);
- ``teacher``: the full model (width 1.0) in eager fp32;

with the speedup of ``fast`` over each, its achieved conv TFLOP/s (FLOPs counted from the model's
convs on the meta device) and fraction of the device's dense peak, and ``max_err``: max |fast -
exported| on the benchmark input. Results go to ``bench/results/speed_<device>.json`` and ``.md``.

    python bench/speed.py                  # CUDA: 720p/1080p outputs, fp16; CPU: LR 32x32, fp32
    python bench/speed.py --threads 1      # the committed CPU results (a busy 2-core machine)
    python bench/speed.py --quick --out /tmp/x   # tiny demo-size models, one scale, one repeat
    python bench/speed.py --students edsr:0.25 --scales 4 --no-compile   # a subset

On CPU the table compares runtimes instead (:func:`cpu_main`): ``FastStudent`` on the native
kernels (``backend="native"``) and on PyTorch ops (``"eager"``), ONNX Runtime fp32 and OpenVINO fp32
and bf16 on the same student exported by ``csd_fast.onnx_export`` (dynamo exporter), at 1 and 2
threads, each variant timed once per round, rounds interleaved in one process after a short idle
gap (ONNX Runtime's spinning disabled), ms median / best, ratios and GFLOP/s:

    python bench/speed.py                              # CPU: all students, LR 128x128 and 320x180
    python bench/speed.py --quick --out /tmp/x         # CPU smoke test: demo student, LR 32x32
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from csd_fast.cpu_dispatch import cpu_model
from csd_fast.fast import accelerate
from csd_fast.fileio import atomic_write_text
from csd_fast.models import build_model, model_from_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_runtimes import Unavailable, export_onnx, onnx_folder, openvino_runner, ort_runner  # noqa: E402

# Dense tensor-core peaks in TFLOP/s (fp16/bf16 with fp32 accumulation; fp32 runs as TF32),
# matched by substring of the device name, first match wins.
PEAKS = [
    ("H100 PCIe", {"fp16": 756, "bf16": 756, "fp32": 378}),
    ("H100", {"fp16": 989, "bf16": 989, "fp32": 494}),
    ("H200", {"fp16": 989, "bf16": 989, "fp32": 494}),
    ("A100", {"fp16": 312, "bf16": 312, "fp32": 156}),
    ("L40S", {"fp16": 362, "bf16": 362, "fp32": 183}),
    ("L4", {"fp16": 121, "bf16": 121, "fp32": 60}),
]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
STUDENTS = [("edsr", 0.5), ("edsr", 0.25), ("rcan", 0.25), ("carn", 0.5)]
BASELINES = ("official", "exported", "compiled", "teacher")
OUTPUTS = {"720p": (720, 1280), "1080p": (1080, 1920)}


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})"


def peak_tflops(name: str, dtype: str):
    for key, peaks in PEAKS:
        if key in name:
            return peaks[dtype]
    return None


def conv_flops(model: nn.Module, lr_shape) -> int:
    """2 * MACs of every conv of ``model`` (at width 1.0) at ``lr_shape``, counted on the meta device."""
    with torch.device("meta"):
        meta = model_from_config(model.arch, model.config)
    total = 0

    def count(mod, inp, out):
        nonlocal total
        total += 2 * out.numel() * inp[0].shape[1] * mod.kernel_size[0] * mod.kernel_size[1]

    hooks = [m.register_forward_hook(count) for m in meta.modules() if isinstance(m, nn.Conv2d)]
    meta(torch.empty(lr_shape, device="meta"))
    for h in hooks:
        h.remove()
    return total


def median_ms(fn, x, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn(x)`` in ms (CUDA events on CUDA)."""
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(repeats):
        if x.is_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(x)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def run_case(arch, width, scale, lr_hw, args, device, dtype, teachers):
    """One row: the timings (ms) of fast and every baseline that runs here, plus FLOPs and error."""
    torch.manual_seed(0)
    model = build_model(arch, scale=scale, preset=args.preset).to(device).eval().requires_grad_(False)
    student = model.export(width)
    x = torch.rand(1, 3, *lr_hw, device=device)
    x_cl = x.to(dtype).contiguous(memory_format=torch.channels_last)
    key = (arch, scale, lr_hw)
    if key not in teachers:
        with torch.inference_mode():
            teachers[key] = median_ms(lambda t: model(t, 1.0), x, args.repeats, args.warmup)

    fast = accelerate(student, dtype=dtype)
    official = model.to(dtype)  # the teacher's weights, sliced at every call
    exported = student.to(dtype=dtype, memory_format=torch.channels_last)
    runs = {"fast": (fast, x), "official": (lambda t: official(t, width), x.to(dtype)), "exported": (exported, x_cl)}
    notes = {}
    if device.type == "cuda" and not args.no_compile:
        runs["compiled"] = (torch.compile(exported, mode="max-autotune", dynamic=False), x_cl)
    else:
        notes["compiled"] = "skipped (CUDA only)" if device.type != "cuda" else "skipped (--no-compile)"
    if device.type != "cuda":
        notes["fast"] = "eager channels_last backend (Triton rows need CUDA)"

    ms = {"teacher": teachers[key]}
    with torch.inference_mode():
        max_err = (fast(x).float() - exported(x_cl).float()).abs().max().item()
        for name, (fn, inp) in runs.items():
            try:
                ms[name] = median_ms(fn, inp, args.repeats, args.warmup)
            except Exception as err:  # e.g. a failed max-autotune compile: a result to report, not a crash
                if name == "fast":
                    raise
                notes[name] = f"failed: {type(err).__name__}: {str(err)[:200]}"
    return ms, notes, conv_flops(student, (1, 3, *lr_hw)), max_err


def lr_sizes(args, device, scale):
    if args.quick:
        return {"LR 16x16": (16, 16)}
    if device.type == "cuda":
        return {name: (h // scale, w // scale) for name, (h, w) in OUTPUTS.items()}
    return {"LR 32x32": (32, 32)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny: demo-size models, x2, LR 16x16, 1 repeat")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: fp16 on CUDA, fp32 on CPU")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile max-autotune baseline")
    p.add_argument("--students", type=_students, default=STUDENTS, help="arch:width,... (default: all four)")
    p.add_argument("--scales", type=lambda s: tuple(int(v) for v in s.split(",")), default=None, help="e.g. 2,4")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: torch's); 1 is steadier on a busy shared machine, where OpenMP "
                        "barriers of several threads stall")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--cpu-threads", default="1,2", help="CPU: thread counts, e.g. 1,2")
    p.add_argument("--cpu-sizes", default=None, help="CPU: a comma-separated subset of CPU_SIZES, e.g. 'LR 128x128'")
    p.add_argument("--cpu-students", default=None, help="CPU: a comma-separated subset of CPU_STUDENTS, e.g. 'demo,rcan w0.25'")
    p.add_argument("--rounds", type=int, default=None, help="CPU: interleaved rounds (default 7; --quick 2)")
    p.add_argument("--gap-ms", type=float, default=30.0, help="CPU: idle gap before each timed call")
    p.add_argument("--psnr-student", type=Path, default=None,
                   help="CPU: a trained student (.safetensors, csd-fast export) for the bf16-vs-fp32 PSNR-Y check "
                        "on the bundled held-out photos")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        return cpu_main(args, argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype_name = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    dtype = DTYPES[dtype_name]
    args.preset = "demo" if args.quick else "paper"
    args.repeats = args.repeats or (1 if args.quick else 10 if device.type == "cuda" else 3)
    args.warmup = args.warmup if args.warmup is not None else (1 if device.type != "cuda" else 3)
    scales = args.scales or ((2,) if args.quick else (2, 4))
    name = device_name(device)
    peak = peak_tflops(name, dtype_name)

    rows, teachers = [], {}
    for arch, width in args.students:
        for scale in scales:
            for size, lr_hw in lr_sizes(args, device, scale).items():
                ms, notes, flops, err = run_case(arch, width, scale, lr_hw, args, device, dtype, teachers)
                tflops = flops / (ms["fast"] * 1e-3) / 1e12
                rows.append(dict(
                    model=f"{arch} w{width}", scale=scale, size=size, lr=list(lr_hw), gflop=flops / 1e9, ms=ms,
                    speedup={b: ms[b] / ms["fast"] for b in BASELINES if b in ms}, tflops=tflops,
                    peak_fraction=None if peak is None else tflops / peak, max_err=err, notes=notes,
                ))
                print(_row_text(rows[-1]), flush=True)

    meta = dict(
        device=name, dtype=dtype_name, torch=torch.__version__, triton=_triton_version(), preset=args.preset,
        repeats=args.repeats, date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join(["python bench/speed.py", *(sys.argv[1:] if argv is None else argv)]),
        peak_tflops=peak, quick=args.quick, cpu_threads=torch.get_num_threads(),
        load_average=[round(v, 2) for v in os.getloadavg()],  # a busy shared machine skews CPU timings
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "speed_" + re.sub(r"[^A-Za-z0-9]+", "_", "cpu" if device.type == "cpu" else name).strip("_")
    atomic_write_text(args.out / f"{stem}.json", json.dumps(dict(meta=meta, rows=rows), indent=2))
    atomic_write_text(args.out / f"{stem}.md", _markdown(meta, rows))
    print(f"wrote {args.out / stem}.json and .md")
    return rows


def _students(text: str):
    """``"edsr:0.25,rcan:0.25"`` -> ``[("edsr", 0.25), ("rcan", 0.25)]``."""
    try:
        return [(arch, float(width)) for arch, width in (item.split(":") for item in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected arch:width[,arch:width...], got {text!r}") from None


def _triton_version():
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def _fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def _row_text(r):
    ms = "  ".join(f"{k} {_fmt(r['ms'].get(k))}" for k in ("fast",) + BASELINES)
    sp = "  ".join(f"x{_fmt(r['speedup'].get(k))} vs {k}" for k in BASELINES)
    return f"{r['model']:<10} x{r['scale']} {r['size']:<8} ms: {ms} | {sp} | {r['tflops']:.3f} TFLOP/s"


def _markdown(meta, rows):
    lines = [
        f"# Fast student speed: {meta['device']}",
        "",
        f"{meta['date']}, torch {meta['torch']}, triton {meta['triton']}, {meta['dtype']}, preset {meta['preset']}, "
        f"median of {meta['repeats']}; peak {meta['peak_tflops'] or 'unknown'} TFLOP/s; {meta['cpu_threads']} CPU threads, "
        f"load average {meta['load_average']}. `{meta['command']}`",
        "",
        "| model | scale | size | GFLOP | fast ms | official ms | exported ms | compiled ms | teacher fp32 ms "
        "| vs official | vs exported | vs compiled | vs teacher | TFLOP/s | % peak | max err |",
        "|" + "---|" * 16,
    ]
    for r in rows:
        ms, sp = r["ms"], r["speedup"]
        pct = None if r["peak_fraction"] is None else 100 * r["peak_fraction"]
        lines.append(
            f"| {r['model']} | x{r['scale']} | {r['size']} | {r['gflop']:.1f} | {_fmt(ms['fast'])} | "
            + " | ".join(_fmt(ms.get(b)) for b in BASELINES) + " | "
            + " | ".join(_fmt(sp.get(b)) for b in BASELINES)
            + f" | {r['tflops']:.3f} | {_fmt(pct, '.1f')} | {r['max_err']:.2g} |"
        )
    notes = sorted({f"{k}: {v}" for r in rows for k, v in r["notes"].items()})
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


# ---- CPU: runtimes compared in interleaved rounds ------------------------------------------------

# name -> (arch, preset, width); "demo" is the student of `csd-fast demo`
CPU_STUDENTS = {
    "demo": ("edsr", "demo", 0.25), "edsr-baseline w0.25": ("edsr", "baseline", 0.25),
    "edsr w0.25": ("edsr", "paper", 0.25), "rcan w0.25": ("rcan", "paper", 0.25), "carn w0.25": ("carn", "paper", 0.25),
    "edsr w0.5": ("edsr", "paper", 0.5), "rcan w0.5": ("rcan", "paper", 0.5), "carn w0.5": ("carn", "paper", 0.5),
}
CPU_SIZES = {"LR 128x128": (128, 128), "LR 320x180": (180, 320)}
CPU_VARIANTS = ("cpu-auto fp32", "native fp32", "eager fp32", "ort fp32", "openvino fp32", "cpu-auto bf16", "native bf16", "eager bf16",
                "openvino bf16")


def _cpu_runners(student, path, threads, shape, notes):
    """Variant name -> ``fn(x)`` for ``threads`` threads; skipped ones get a note."""
    runners = {}
    for name in CPU_VARIANTS:
        kind, dtype = name.split()
        try:
            if kind in ("cpu-auto", "native", "eager"):  # cpu-auto: per layer native or oneDNN (csd_fast.cpu_dispatch)
                runners[name] = accelerate(student, dtype=DTYPES[dtype], backend=kind)
            elif isinstance(path, Unavailable):
                raise path
            elif kind == "ort":
                runners[name] = ort_runner(path, threads)
            else:
                runners[name] = openvino_runner(path, threads, "f32" if dtype == "fp32" else "bf16", shape)
        except Unavailable as err:
            notes[name] = f"skipped: {err}"
    return runners


def interleaved_ms(runners: dict, x, rounds: int, warmup: int, gap_s: float) -> dict:
    """``{name: [ms per round]}``: each variant once per round, order rotated every round, an idle gap
    of ``gap_s`` before each timed call (lets other runtimes' worker threads go quiet)."""
    names = list(runners)
    for fn in runners.values():
        for _ in range(warmup):
            fn(x)
    times = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(gap_s)
            t0 = time.perf_counter()
            runners[name](x)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def cpu_case(label, scale, size, lr_hw, args, folder):
    """Rows (one per thread count) for one student, scale and LR size."""
    arch, preset, width = CPU_STUDENTS[label]
    torch.manual_seed(0)
    student = build_model(arch, scale=scale, preset=preset).export(width).eval().requires_grad_(False)
    x = torch.rand(1, 3, *lr_hw)
    try:
        path = export_onnx(student, folder, f"{label}_x{scale}".replace(" ", "_"))
    except Unavailable as err:
        path = err
    flops = conv_flops(student, tuple(x.shape))
    with torch.inference_mode():
        ref = student(x)
    rows = []
    for threads in args.thread_counts:
        torch.set_num_threads(threads)
        notes = {}
        runners = _cpu_runners(student, path, threads, tuple(x.shape), notes)
        with torch.inference_mode():
            err = {n: (fn(x).float() - ref).abs().max().item() for n, fn in runners.items()}
            times = interleaved_ms(runners, x, args.rounds, args.warmup, args.gap_ms / 1e3)
        ms = {n: statistics.median(t) for n, t in times.items()}
        best = {n: min(t) for n, t in times.items()}
        rows.append(dict(
            student=label, scale=scale, size=size, lr=list(lr_hw), threads=threads, gflop=flops / 1e9, ms=ms, best=best,
            ratios=_cpu_ratios(ms), gflops={n: flops / (v * 1e-3) / 1e9 for n, v in ms.items()}, max_err=err, notes=notes,
        ))
        print(_cpu_row_text(rows[-1]), flush=True)
    return rows


def _cpu_ratios(ms):
    """Speedups of the native kernels (median over median): fp32 vs the faster of ORT and OpenVINO
    fp32, vs eager; bf16 vs OpenVINO bf16, vs eager."""
    out = {}
    others = [ms[k] for k in ("ort fp32", "openvino fp32") if k in ms]
    if "native fp32" in ms:
        if others:
            out["fp32 vs best other"] = min(others) / ms["native fp32"]
        if "eager fp32" in ms:
            out["fp32 vs eager"] = ms["eager fp32"] / ms["native fp32"]
    if "native bf16" in ms:
        if "openvino bf16" in ms:
            out["bf16 vs openvino"] = ms["openvino bf16"] / ms["native bf16"]
        if "eager bf16" in ms:
            out["bf16 vs eager"] = ms["eager bf16"] / ms["native bf16"]
    return out


def _cpu_row_text(r):
    ms = "  ".join(f"{n} {_fmt(r['ms'].get(n))}/{_fmt(r['best'].get(n))}" for n in CPU_VARIANTS if n in r["ms"])
    ratios = "  ".join(f"{k} x{v:.2f}" for k, v in r["ratios"].items())
    return f"{r['student']:<20} x{r['scale']} {r['size']:<10} {r['threads']}t | {ms} | {ratios}"


def cpu_main(args, argv):
    args.thread_counts = [args.threads] if args.threads else [int(t) for t in args.cpu_threads.split(",")]
    args.rounds = args.rounds or (2 if args.quick else 7)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    students = args.cpu_students.split(",") if args.cpu_students else ["demo"] if args.quick else list(CPU_STUDENTS)
    unknown = [s for s in students if s not in CPU_STUDENTS]
    if unknown:
        raise SystemExit(f"--cpu-students: expected names from {sorted(CPU_STUDENTS)}, got {unknown}")
    sizes = {"LR 32x32": (32, 32)} if args.quick else CPU_SIZES
    if args.cpu_sizes:
        sizes = {k: CPU_SIZES[k] for k in args.cpu_sizes.split(",")}
    scales = args.scales or (2,)
    rows = []
    psnr = None
    if args.psnr_student:
        torch.set_num_threads(max(args.thread_counts))
        psnr = bf16_psnr(args.psnr_student, args.quick)
    with onnx_folder() as tmp:
        for label in students:
            for scale in scales:
                for size, lr_hw in sizes.items():
                    rows += cpu_case(label, scale, size, lr_hw, args, Path(tmp))
                    _write_cpu(args, argv, rows, psnr)  # after every case: a cut-short run keeps what it measured
    print(f"wrote {args.out / 'speed_cpu'}.json and .md")
    return rows


def _write_cpu(args, argv, rows, psnr):
    meta = dict(
        psnr=psnr, device=device_name(torch.device("cpu")), cpu=cpu_model(), torch=torch.__version__, runtimes=_runtime_versions(),
        rounds=args.rounds, warmup=args.warmup, gap_ms=args.gap_ms, quick=args.quick,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join(["python bench/speed.py", *(sys.argv[1:] if argv is None else argv)]),
        load_average=[round(v, 2) for v in os.getloadavg()],
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed_cpu.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    (args.out / "speed_cpu.md").write_text(_cpu_markdown(meta, rows))


def bf16_psnr(path: Path, quick: bool) -> dict:
    """PSNR-Y (crop = scale) of the native backend in fp32 and bf16 on the bundled held-out photos
    (LR = MATLAB bicubic of the mod-cropped HR; longer side <= 256, 128 with ``--quick``)."""
    from csd_fast.data import bicubic_downscale, bundled_images
    from csd_fast.data.imresize import mod_crop
    from csd_fast.metrics import psnr_y
    from csd_fast.student_io import load_student

    student = load_student(path)
    s = student.scale
    fast = {d: accelerate(student, dtype=DTYPES[d], backend="native") for d in ("fp32", "bf16")}
    per_image = {}
    for name, hr in bundled_images("test", max_side=128 if quick else 256):
        hr = mod_crop(hr, s)[None]
        lr = bicubic_downscale(hr, s).clamp(0, 1)
        per_image[name] = {d: psnr_y(f(lr).clamp(0, 1), hr, s) for d, f in fast.items()}
    mean = {d: statistics.mean(v[d] for v in per_image.values()) for d in fast}
    deltas = [abs(v["bf16"] - v["fp32"]) for v in per_image.values()]
    delta, mean_delta = max(deltas), statistics.mean(deltas)
    print(f"PSNR-Y {path.name}: fp32 {mean['fp32']:.3f} dB, bf16 {mean['bf16']:.3f} dB, |delta| max {delta:.4f} dB, "
          f"mean {mean_delta:.4f} dB", flush=True)
    return dict(student=str(path.name), arch=student.arch, scale=s, per_image=per_image, mean=mean, max_abs_delta_db=delta,
                mean_abs_delta_db=mean_delta)


def _runtime_versions():
    out = {}
    for mod in ("onnxruntime", "openvino"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    from csd_fast import native

    out["native isa"] = {"fp32": native.best_isa(torch.float32), "bf16": native.best_isa(torch.bfloat16)}
    return out


def _cpu_markdown(meta, rows):
    cols = [n for n in CPU_VARIANTS if any(n in r["ms"] for r in rows)]
    lines = [
        f"# Fast student speed on CPU: {meta['cpu']}",
        "",
        f"{meta['date']}, torch {meta['torch']}, {meta['runtimes']}; {meta['rounds']} interleaved rounds after "
        f"{meta['warmup']} warm-up calls, {meta['gap_ms']} ms idle before each call; load average {meta['load_average']}. "
        f"`{meta['command']}`",
        "",
        "ms per image, median / best of the rounds. Ratios: median of the other over median of native "
        "(fp32: the faster of ONNX Runtime and OpenVINO fp32). GFLOP/s: native, from the median.",
        "",
        "| student | scale | size | threads | GFLOP | " + " | ".join(cols)
        + " | fp32 vs ORT/OV | fp32 vs eager | bf16 vs OV | bf16 vs eager | GFLOP/s fp32 | GFLOP/s bf16 |",
        "|" + "---|" * (5 + len(cols) + 6),
    ]
    for r in rows:
        cells = [f"{_fmt(r['ms'].get(n), '.1f')} / {_fmt(r['best'].get(n), '.1f')}" if n in r["ms"] else "-" for n in cols]
        ratios = [_fmt(r["ratios"].get(k)) for k in ("fp32 vs best other", "fp32 vs eager", "bf16 vs openvino", "bf16 vs eager")]
        gf = [_fmt(r["gflops"].get(k), ".0f") for k in ("native fp32", "native bf16")]
        lines.append(f"| {r['student']} | x{r['scale']} | {r['size']} | {r['threads']} | {r['gflop']:.2f} | "
                     + " | ".join(cells + ratios + gf) + " |")
    notes = sorted({f"{k}: {v}" for r in rows for k, v in r["notes"].items()})
    errs = {n: max(r["max_err"].get(n, 0.0) for r in rows) for n in cols}
    if meta["psnr"]:
        p = meta["psnr"]
        lines += ["", f"bf16 quality ({p['arch']} x{p['scale']} student `{p['student']}`, bundled held-out photos, native "
                      f"backend): PSNR-Y fp32 {p['mean']['fp32']:.3f} dB, bf16 {p['mean']['bf16']:.3f} dB, largest "
                      f"per-image |difference| {p['max_abs_delta_db']:.4f} dB."]
    lines += ["", "Max |output - eager fp32 student| over all rows: " + ", ".join(f"{n} {v:.2g}" for n, v in errs.items())]
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
