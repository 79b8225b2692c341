"""Static performance report of the GPU code for an H100 (sm_90), built on a machine without a GPU.

Every time printed here is an ESTIMATE from compiled code and a roofline model; nothing ran on a GPU.

1. Student convs: the layer list of each student (EDSR, RCAN, CARN at LR ``--lr``, x4) is recorded by
   running ``FastStudent``'s plan on a tiny CPU input through a recording backend. Each distinct conv
   kernel specialization (channels, taps, epilogue flags, dtype, strides as Triton's JIT would
   specialize them) is compiled ahead of time for sm_90 (``triton.compile`` with
   ``GPUTarget("cuda", 90, 32)``), for every tile the autotuner would keep (fp16; bf16 and fp32
   reuse fp16's winner); registers, local memory (spills), shared memory, wgmma use and the SASS of
   the main loop (``cuobjdump -sass``: the innermost loop holding HGMMA) are recorded.
2. Roofline model per layer (assumptions in ``H100`` and printed with the results):
   ``t = max(t_tensor, t_hbm, t_l2, t_issue) + launch gap``, where
   - ``t_tensor``: MACs the tiles execute (channels and pixels padded to the tile) / dense peak;
   - ``t_hbm``: bytes to and from HBM: outputs and weights, and inputs unless an LR activation set
     small enough to stay in L2 since the layer that wrote it (the frame and HR inputs always count);
   - ``t_l2``: bytes the loads request from L2: weights (cp.async.cg) every K step of every program;
     activations (cp.async.ca, through L1) once per program for its tile plus halo when the resident
     programs' footprints fit in what shared memory leaves of L1, else every K step (9x for 3x3);
   - ``t_issue``: SASS instructions issued (main-loop body x trip count + the rest of the kernel once,
     per warp) / (4 warp schedulers x 1 instruction/clock x SMs x clock);
   compute terms divided by the wave efficiency (programs / (waves x resident programs)). The tile the
   model rates fastest is the one reported (a static stand-in for the autotuner).
   The weight-stationary persistent conv (``kernels/conv2d_persistent.py``) is compiled and modelled
   beside v2 on every body conv it can run (same terms; its P = min(tiles, SMs x programs per SM)
   programs read the weights from L2 once each and loop over the pixel tiles, the busiest SM's
   programs setting the pace); ``decisions()`` compares the two estimates, and the per-frame totals
   use the kernel the Triton backend dispatches (``conv2d_persistent.MODEL_FASTER``).
3. The CUDA loss kernels (``csrc/cuda/*.cu``, compiled with ``nvcc -arch=sm_90 --resource-usage``):
   registers, spills, shared memory and SASS size per kernel; the HBM floor of the bytes the op
   must read and write for VGG19 taps of 192x192 patches (B=16, K=10 shared negatives, fp32).

    python bench/gpu_static.py                            # all students, fp16 + bf16 + fp32
    python bench/gpu_static.py --students edsr:0.25 --dtypes fp16 --out /tmp/x   # a subset

Results: ``bench/results/gpu_static_sm90.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

H100 = {
    "device": "H100 SXM5 80GB (sm_90), modelled",
    "sms": 132,
    "clock_ghz": 1.83,  # the clock at which 989 TFLOP/s fp16 dense is quoted
    "tensor_tflops": {"fp16": 989.4, "bf16": 989.4, "fp32": 494.7},  # dense; fp32 runs as TF32
    "hbm_tb_s": 3.35,
    "l2_tb_s": 5.5,  # L2 -> SM bandwidth, published microbenchmarks of H100 (assumed, not measured here)
    "issue_per_sm_per_clock": 4,  # 4 warp schedulers, one warp instruction each per clock
    "regs_per_sm": 65536,
    "smem_per_sm": 228 * 1024,
    "smem_per_block": 227 * 1024,
    "max_threads_per_sm": 2048,
    "max_ctas_per_sm": 32,
    "launch_gap_us": 1.0,  # between dependent kernels of one CUDA graph (assumed)
    "l1_bytes": 256 * 1024,  # L1 + shared memory per SM; L1 is what shared memory leaves
    "l2_resident_bytes": 25 * 2**20,  # half the 50 MB L2: a layer's activations up to this size stay there
}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
ELT = {"fp16": 2, "bf16": 2, "fp32": 4}
STUDENTS = [("edsr", 0.25), ("rcan", 0.25), ("carn", 0.5)]
SCALE = 4


def _tool(name: str) -> str:
    """A CUDA binary utility: on PATH, in the CUDA toolkit, or shipped with Triton."""
    import triton

    for cand in (shutil.which(name), f"/usr/local/cuda/bin/{name}",
                 str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)):
        if cand and Path(cand).exists():
            return cand
    raise FileNotFoundError(f"{name}: not found on PATH, in /usr/local/cuda/bin or in triton's backend")


# ---- the students' layers, recorded from the fast plan ---------------------------------------

@dataclass(frozen=True)
class ConvLayer:
    """One conv launch, sizes relative to the LR input (``rel`` = its H / LR H)."""

    c_in: int
    c_out: int
    k: int
    rel: int
    shuffle: int = 1
    relu: bool = False
    residual: bool = False
    pool: bool = False
    mean_in: bool = False
    mean_out: bool = False
    in_nchw: bool = False
    out_nchw: bool = False
    in_buf_c: int = 0  # channels of the NHWC buffer the input is a slice of (CARN), 0: its own
    out_buf_c: int = 0


class _Recorder:
    """Wraps the plan's eager backend: records every conv (and RCAN attention) it is asked for."""

    def __init__(self, ops, lr_h: int):
        self.ops, self.lr_h, self.layers = ops, lr_h, []

    def __getattr__(self, name):
        return getattr(self.ops, name)

    def _record(self, x, layer, out=None, residual=None, shuffle=1, relu=False, sub_mean=False, add_mean=False, pool=False):
        c_out, c_in, k, _ = layer.weight.shape
        nchw = lambda t: t is not None and t.stride(3) == 1 and not t.is_contiguous(memory_format=torch.channels_last)
        buf = lambda t: int(t.stride(3)) if t is not None and t.stride(1) == 1 and t.stride(3) != t.shape[1] else 0
        self.layers.append(ConvLayer(
            c_in=c_in, c_out=c_out, k=k, rel=x.shape[2] // self.lr_h, shuffle=shuffle, relu=relu,
            residual=residual is not None, pool=pool, mean_in=sub_mean, mean_out=add_mean,
            in_nchw=nchw(x), out_nchw=out is not None and nchw(out), in_buf_c=buf(x), out_buf_c=buf(out),
        ))

    def conv(self, x, layer, *, out=None, residual=None, res_scale=1.0, relu=False, shuffle=1, sub_mean=False, add_mean=False, **kw):
        self._record(x, layer, out, residual, shuffle, relu, sub_mean, add_mean)
        return self.ops.conv(x, layer, out=out, residual=residual, res_scale=res_scale, relu=relu, shuffle=shuffle,
                             sub_mean=sub_mean, add_mean=add_mean)

    def res_block(self, x, conv1, conv2, **kw):
        from csd_fast.backends import Backend

        return Backend.res_block(self, x, conv1, conv2, **kw)  # the two convs, recorded

    def ca_residual(self, x, t, conv2, att, pool):
        self._record(t, conv2, pool=True)
        self.layers.append("ca_residual")
        return self.ops.ca_residual(x, t, conv2, att, pool)


def student_layers(arch: str, width: float) -> list:
    """The plan's conv launches (``ConvLayer``) and ``"ca_residual"`` markers, in execution order."""
    from csd_fast.fast import accelerate
    from csd_fast.models import build_model

    torch.manual_seed(0)
    student = build_model(arch, scale=SCALE, preset="paper").export(width).eval()
    fast = accelerate(student, dtype=torch.float32, backend="eager", cuda_graphs=False)
    lr_h = 4
    fast.plan.ops = rec = _Recorder(fast.plan.ops, lr_h)
    fast(torch.rand(1, 3, lr_h, 6))
    return rec.layers


# ---- ahead-of-time compilation and SASS analysis ----------------------------------------------

def _specialize(value):
    """Triton's JIT specialization of an int argument: ``("constexpr", 1)``, ``("i32", "D")``, ..."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    return native_specialize_impl(BaseBackend, value, False, True, True)


def compile_sm90(fn, args: dict, constexprs: dict, num_warps: int, num_stages: int):
    """Compile ``fn`` for sm_90 as the JIT would for these argument values: pointer args given as
    ``"*fp16"``-style strings (16-byte aligned), ints specialized (1 -> constexpr, multiples of 16
    -> divisibility hint)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, attrs, consts = {}, {}, dict(constexprs)
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        value = args[name]
        if value is None:
            signature[name] = "constexpr"
            consts[name] = None
        elif isinstance(value, str):
            signature[name] = value
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            ty, key = _specialize(int(value))
            if ty == "constexpr":
                signature[name] = "constexpr"
                consts[name] = key
            else:
                signature[name] = ty
                if "D" in key:
                    attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn, signature, consts, attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": num_stages})


_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][\w.]*)([^;]*);")
_HGMMA = re.compile(r"HGMMA\.(\d+)x(\d+)x(\d+)")


def sass_stats(cubin: bytes) -> dict:
    """:func:`parse_sass` of ``cuobjdump -sass`` and ``-res-usage`` of a one-kernel cubin."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([_tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True, check=True).stdout
        res = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    return parse_sass(sass, res)


def parse_sass(sass: str, res: str) -> dict:
    """Registers, local memory and spill instructions, instruction counts of the kernel and of its main
    loop: the innermost loop (a backward branch) holding HGMMA, with SASS instructions per
    64x64x16-equivalent wgmma (HGMMA shapes weighted by m*n*k)."""
    instrs = [(int(m.group(1), 16), m.group(3), m.group(4)) for m in map(_INSTR.search, sass.splitlines()) if m]
    usage = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", res))
    loops = []
    for addr, op, operands in instrs:
        target = re.search(r"0x([0-9a-f]+)", operands) if op.startswith("BRA") else None
        if target and int(target.group(1), 16) <= addr:
            body = [o for a, o, _ in instrs if int(target.group(1), 16) <= a <= addr]
            macs = sum(math.prod(map(int, _HGMMA.search(o).groups())) for o in body if _HGMMA.search(o))
            if macs:
                loops.append((len(body), macs, body))
    all_macs = sum(math.prod(map(int, _HGMMA.search(op).groups())) for _, op, _ in instrs if _HGMMA.search(op))
    out = {
        "regs": int(usage.get("REG", 0)), "local_bytes": int(usage.get("LOCAL", 0)) + int(usage.get("STACK", 0)),
        "spill_instrs": sum(op.startswith(("STL", "LDL")) for _, op, _ in instrs),
        "sass_total": len(instrs), "hgmma_total": sum(op.startswith("HGMMA") for _, op, _ in instrs),
    }
    if loops:
        n, macs, body = min(loops, key=lambda t: t[0])
        mix = {}
        for o in body:
            cls = o.split(".")[0]
            mix[cls] = mix.get(cls, 0) + 1
        out.update(loop_instrs=n, loop_hgmma=sum(o.startswith("HGMMA") for o in body), loop_macs_per_warpgroup=macs,
                   instrs_per_64x64x16=round(n / (macs / (64 * 64 * 16)), 1),
                   loop_mix=dict(sorted(mix.items(), key=lambda kv: -kv[1])[:12]))
    else:  # the K loop was fully unrolled (short loops): the whole kernel runs once
        out.update(loop_instrs=0, loop_hgmma=0, loop_macs_per_warpgroup=0,
                   instrs_per_64x64x16=round(len(instrs) / (all_macs / (64 * 64 * 16)), 1) if all_macs else None)
    return out


def _conv_args(layer: ConvLayer, dtype: str, lr: tuple) -> tuple:
    """(args, constexprs) of ``_conv2d_kernel`` for this layer at LR size ``lr``, as the launcher passes them."""
    from csd_fast.kernels.utils import size_bucket

    h, w = lr[0] * layer.rel, lr[1] * layer.rel
    s = layer.shuffle
    ptr = f"*{dtype}"

    def strides(c, hh, ww, nchw, buf):
        if nchw:
            return (c * hh * ww, hh * ww, ww, 1)
        cb = buf or c
        return (hh * ww * cb, 1, ww * cb, cb)

    io = "fp32" if dtype == "fp32" else dtype  # frames in/out in the compute dtype
    x_s = strides(layer.c_in, h, w, layer.in_nchw, layer.in_buf_c)
    o_s = strides(layer.c_out // s**2, h * s, w * s, layer.out_nchw, layer.out_buf_c)
    r_s = o_s if layer.residual else (0, 0, 0, 0)
    kk = layer.k * layer.k * layer.c_in
    w_s = (1, kk) if dtype == "fp32" else (layer.c_out, 1)
    args = dict(
        x_ptr=f"*{io}" if layer.in_nchw else ptr, w_ptr=ptr, b_ptr="*fp32", out_ptr=f"*{io}" if layer.out_nchw else ptr,
        res_ptr=ptr if layer.residual else None, mean_in_ptr="*fp32" if layer.mean_in else None,
        mean_out_ptr="*fp32" if layer.mean_out else None, pool_ptr="*fp32",
        H=h, W=w, HW_BUCKET=size_bucket(h * w), W_BUCKET=size_bucket(w),
        sxn=x_s[0], sxc=x_s[1], sxh=x_s[2], sxw=x_s[3], son=o_s[0], soc=o_s[1], soh=o_s[2], sow=o_s[3],
        srn=r_s[0], src=r_s[1], srh=r_s[2], srw=r_s[3], swk=w_s[0], swn=w_s[1], res_scale=0.5,
    )
    constexprs = dict(
        C_IN=layer.c_in, C_OUT=layer.c_out, KSIZE=layer.k, SHUFFLE=s, RELU=layer.relu, HAS_BIAS=True,
        HAS_RES=layer.residual, HAS_MEAN_IN=layer.mean_in, HAS_MEAN_OUT=layer.mean_out, HAS_POOL=layer.pool,
        DOT_PRECISION="tf32",
    )
    return args, constexprs


def small_out(layer: ConvLayer) -> bool:
    """True when ``conv2d`` sends this layer to the small-C_out (tail) kernel."""
    from csd_fast.kernels import conv2d_small_out

    return conv2d_small_out.handles(layer.k, layer.c_in, layer.c_out, layer.shuffle, True if layer.residual else None,
                                    True if layer.pool else None, True if layer.mean_in else None)


def candidate_tiles(layer: ConvLayer, lr: tuple) -> list:
    """The GPU tiles the autotuner would benchmark for this layer (after its pruning)."""
    import triton
    from csd_fast.kernels import conv2d_small_out
    from csd_fast.kernels.conv2d import _GPU_TILES, _prune
    from csd_fast.kernels.utils import size_bucket

    if small_out(layer):
        return list(conv2d_small_out._GPU_TILES)
    configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "TILE_W": tw}, num_stages=st, num_warps=nw)
               for m, n, k, tw, st, nw in _GPU_TILES]
    kept = _prune(configs, {}, C_OUT=layer.c_out, C_IN=layer.c_in, W_BUCKET=size_bucket(lr[1] * layer.rel))
    return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.kwargs["TILE_W"], c.num_stages, c.num_warps) for c in kept]


def _compile_conv(job):
    """Worker: compile one (layer, dtype, tile) and return its static numbers (or the error)."""
    layer, dtype, tile, lr = job
    from csd_fast.kernels.conv2d import _conv2d_kernel
    from csd_fast.kernels.conv2d_small_out import _conv3x3_small_out_kernel

    args, constexprs = _conv_args(layer, dtype, lr)
    if small_out(layer):
        fn = _conv3x3_small_out_kernel.fn
        tw, rows, stages, warps = tile
        args = {k: v for k, v in args.items() if k in fn.arg_names}
        constexprs = {k: v for k, v in constexprs.items() if k in fn.arg_names}
        constexprs.update(TILE_W=tw, ROWS=rows, BLOCK_K=max(16, 1 << (layer.c_in - 1).bit_length()))
    else:
        fn = _conv2d_kernel.fn
        bm, bn, bk, tw, stages, warps = tile
        constexprs.update(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, TILE_W=tw)
    return _compile_stats(fn, args, constexprs, warps, stages)


def _compile_stats(fn, args: dict, constexprs: dict, warps: int, stages: int) -> dict:
    """:func:`compile_sm90` and the static numbers of the kernel (or the error, e.g. out of shared memory)."""
    try:
        kernel = compile_sm90(fn, args, constexprs, warps, stages)
    except Exception as e:  # noqa: BLE001 - an out-of-resources tile is a result, not a crash
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    stats = sass_stats(kernel.asm["cubin"])
    before_loop = kernel.asm["ttgir"].split("scf.for", 1)[0]
    stats.update(shared_bytes=kernel.metadata.shared, wgmma_in_ptx="wgmma.mma_async" in kernel.asm["ptx"],
                 cp_async=sorted(set(re.findall(r"cp\.async\.(c[ag])", kernel.asm["ptx"]))),
                 l1_cached_loads=bool(re.search(r"cp\.async\.ca|ld\.global\.ca", kernel.asm["ptx"])),
                 # tensors copied into shared memory once, before the first loop (the stationary weights)
                 smem_operands_before_loop=len(re.findall(r"ttg\.local_alloc %", before_loop)))
    return stats


def persistent_eligible(layer: ConvLayer) -> bool:
    """True when the weight-stationary persistent kernel can run this layer (``conv2d(..., persistent=True)``)."""
    from csd_fast.kernels import conv2d_persistent

    return conv2d_persistent.handles(layer.k, layer.c_in, layer.c_out, layer.shuffle, True if layer.pool else None,
                                     True if layer.mean_in else None, True if layer.mean_out else None)


def persistent_tiles(layer: ConvLayer, lr: tuple) -> list:
    """The GPU tiles ``(BLOCK_M, TILE_W, PROGRAMS_PER_SM, stages, warps)`` of the persistent kernel its
    autotuner would benchmark for this layer (after its pruning)."""
    import triton
    from csd_fast.kernels.conv2d_persistent import _GPU_TILES, _prune
    from csd_fast.kernels.utils import size_bucket

    configs = [triton.Config({"BLOCK_M": m, "TILE_W": tw, "PROGRAMS_PER_SM": p}, num_stages=st, num_warps=nw)
               for m, tw, p, st, nw in _GPU_TILES]
    kept = _prune(configs, {}, W_BUCKET=size_bucket(lr[1] * layer.rel))
    return [(c.kwargs["BLOCK_M"], c.kwargs["TILE_W"], c.kwargs["PROGRAMS_PER_SM"], c.num_stages, c.num_warps) for c in kept]


def _compile_persistent(job):
    """Worker: compile the persistent kernel for one (layer, dtype, tile) and return its static numbers."""
    layer, dtype, tile, lr = job
    from csd_fast.kernels.conv2d_persistent import _conv3x3_persistent_kernel
    from csd_fast.kernels.utils import size_bucket

    fn = _conv3x3_persistent_kernel.fn
    args, constexprs = _conv_args(layer, dtype, lr)
    h, w = lr[0] * layer.rel, lr[1] * layer.rel
    args = {k: v for k, v in args.items() if k in fn.arg_names}
    args.update(N=1, NHW_BUCKET=size_bucket(h * w))
    bm, tw, per_sm, stages, warps = tile
    constexprs = dict(C=layer.c_in, BLOCK_C=max(16, 1 << (layer.c_in - 1).bit_length()), RELU=layer.relu, HAS_BIAS=True,
                      HAS_RES=layer.residual, DOT_PRECISION="tf32", BLOCK_M=bm, TILE_W=tw, PROGRAMS_PER_SM=per_sm)
    return _compile_stats(fn, args, constexprs, warps, stages)


# ---- the roofline model -------------------------------------------------------------------------

def occupancy(regs: int, shared: int, threads: int, hw=H100) -> int:
    """Programs resident per SM, limited by registers (allocated per warp in units of 256), shared memory, threads."""
    regs_per_warp = math.ceil(max(regs, 1) * 32 / 256) * 256
    by_regs = hw["regs_per_sm"] // (regs_per_warp * (threads // 32))
    by_smem = hw["smem_per_sm"] // (shared + 1024) if shared else hw["max_ctas_per_sm"]
    return max(0, min(by_regs, by_smem, hw["max_threads_per_sm"] // threads, hw["max_ctas_per_sm"]))


def _terms(ctas, warps, macs, hbm, l2, per_warp_instrs, resident, dtype, hw):
    """The roofline terms (us) and the estimate: max of them + the launch gap."""
    slots = hw["sms"] * resident
    wave_eff = ctas / (math.ceil(ctas / slots) * slots)
    issue_rate = hw["sms"] * hw["issue_per_sm_per_clock"] * hw["clock_ghz"] * 1e9
    t = {
        "tensor": macs * 2 / (hw["tensor_tflops"][dtype] * 1e12) / wave_eff,
        "hbm": hbm / (hw["hbm_tb_s"] * 1e12),
        "l2": l2 / (hw["l2_tb_s"] * 1e12),
        "issue": ctas * warps * per_warp_instrs / issue_rate / wave_eff,
    }
    t = {k: v * 1e6 for k, v in t.items()}
    bound = max(t, key=t.get)
    return {"us": t[bound] + hw["launch_gap_us"], "bound": bound, "terms_us": {k: round(v, 2) for k, v in t.items()},
            "ctas": ctas, "resident_per_sm": resident, "wave_eff": round(wave_eff, 3)}


def _hbm_bytes(layer: ConvLayer, h: int, w: int, dtype: str, hw) -> int:
    """Output + weights, plus the inputs that are not still in L2 from the layer that wrote them
    (an LR activation set of a few MB stays L2-resident; the NCHW frame and HR inputs do not)."""
    elt = ELT[dtype]
    act = h * w * layer.c_in * elt
    out = h * w * layer.c_out * elt
    resident = act + out * (2 if layer.residual else 1) <= hw["l2_resident_bytes"]
    reads = 0 if resident and not layer.in_nchw else act + (out if layer.residual else 0)
    return out + layer.k**2 * layer.c_in * layer.c_out * elt + reads


def estimate_conv(layer: ConvLayer, dtype: str, tile: tuple, stats: dict, lr: tuple, hw=H100) -> dict:
    """ESTIMATED time of one conv launch (us) and its roofline terms; see the module doc."""
    h, w = lr[0] * layer.rel, lr[1] * layer.rel
    elt = ELT[dtype]
    if small_out(layer):
        return _estimate_small_out(layer, dtype, tile, stats, h, w, hw)
    bm, bn, bk, tw, _, warps = tile
    rows = bm // tw
    ctas = math.ceil(h / rows) * math.ceil(w / tw) * math.ceil(layer.c_out / bn)
    k_steps = layer.k * layer.k * math.ceil(layer.c_in / bk)
    resident = occupancy(stats["regs"], stats["shared_bytes"], warps * 32, hw)
    if resident == 0:
        return {"error": "does not fit on an SM"}
    a_tile = bm * bk * elt * k_steps  # A bytes a program requests
    halo = layer.k - 1
    footprint = (rows + halo) * (tw + halo) * math.ceil(layer.c_in / bk) * bk * elt  # distinct A bytes of a program
    l1_free = hw["l1_bytes"] - resident * stats["shared_bytes"]
    a_l2 = footprint if stats["l1_cached_loads"] and resident * footprint <= l1_free else a_tile
    weights_l2 = ctas * k_steps * bk * bn * elt  # every program streams its columns of the weights
    l2 = ctas * a_l2 + weights_l2
    if stats["loop_instrs"]:
        iters = k_steps / (stats["loop_macs_per_warpgroup"] * (warps // 4) / (bm * bn * bk))
        per_warp = stats["loop_instrs"] * iters + (stats["sass_total"] - stats["loop_instrs"])
    else:
        per_warp = stats["sass_total"]
    macs = ctas * bm * bn * bk * k_steps
    out = _terms(ctas, warps, macs, _hbm_bytes(layer, h, w, dtype, hw), l2, per_warp, resident, dtype, hw)
    out["a_from_l1"] = a_l2 != a_tile
    return out


def estimate_persistent(layer: ConvLayer, dtype: str, tile: tuple, stats: dict, lr: tuple, hw=H100) -> dict:
    """ESTIMATED time of one launch of the weight-stationary persistent conv (us): ``P = min(tiles,
    SMs x PROGRAMS_PER_SM)`` programs, each reading the ``9*C x C`` weights from L2 once and running
    at most ``ceil(tiles / P)`` pixel tiles; the terms as for v2 (activations once per tile + halo
    through L1 when the footprints fit), paced by the busiest SM's ``ceil(P / SMs)`` programs."""
    h, w = lr[0] * layer.rel, lr[1] * layer.rel
    elt = ELT[dtype]
    bm, tw, per_sm, _, warps = tile
    bc = max(16, 1 << (layer.c_in - 1).bit_length())
    rows = bm // tw
    tiles = math.ceil(h / rows) * math.ceil(w / tw)
    programs = min(tiles, hw["sms"] * per_sm)
    busiest = math.ceil(programs / hw["sms"])
    if occupancy(stats["regs"], stats["shared_bytes"], warps * 32, hw) < busiest:
        return {"error": f"{busiest} programs per SM do not fit"}
    iters = math.ceil(tiles / programs)
    a_tile = 9 * bm * bc * elt  # A bytes one tile requests (9 taps)
    footprint = (rows + 2) * (tw + 2) * bc * elt  # distinct A bytes of a tile
    l1_free = hw["l1_bytes"] - busiest * stats["shared_bytes"]
    a_l2 = footprint if stats["l1_cached_loads"] and busiest * footprint <= l1_free else a_tile
    l2 = tiles * a_l2 + programs * 9 * bc * bc * elt  # the weights once per program
    per_warp = stats["loop_instrs"] * iters + (stats["sass_total"] - stats["loop_instrs"])  # loop body: one tile
    macs = programs * iters * bm * bc * bc * 9
    out = _terms(programs, warps, macs, _hbm_bytes(layer, h, w, dtype, hw), l2, per_warp, busiest, dtype, hw)
    out.update(a_from_l1=a_l2 != a_tile, tiles=tiles, tiles_per_program=iters, tile_loop_eff=round(tiles / (programs * iters), 3))
    return out


def _estimate_small_out(layer, dtype, tile, stats, h, w, hw):
    tw, rows, _, warps = tile
    elt = ELT[dtype]
    resident = occupancy(stats["regs"], stats["shared_bytes"], warps * 32, hw)
    if resident == 0:
        return {"error": "does not fit on an SM"}
    bk = max(16, 1 << (layer.c_in - 1).bit_length())
    ctas = math.ceil(w / tw) * math.ceil(h / rows)
    steps = rows + 2  # input rows a program walks (two of halo)
    a_step = (tw + 2) * bk * elt if stats["l1_cached_loads"] else 3 * tw * bk * elt  # 3 shifted loads of a row
    l2 = ctas * steps * a_step + h * w * layer.c_out * elt  # input rows (+ halo rows and columns), output
    macs = ctas * steps * 3 * tw * 16 * bk
    per_warp = stats["loop_instrs"] * steps + (stats["sass_total"] - stats["loop_instrs"])
    hbm = h * w * (layer.c_in + layer.c_out) * elt + 9 * layer.c_in * layer.c_out * elt
    out = _terms(ctas, warps, macs, hbm, l2, per_warp, resident, dtype, hw)
    out["x_hbm_floor"] = round(out["us"] / out["terms_us"]["hbm"], 2)
    return out


def estimate_ca(c: int, lr: tuple, dtype: str, hw=H100) -> dict:
    """RCAN's ca_residual: streams x and r in, out back (LR activations: from L2, the write to HBM)."""
    act = lr[0] * lr[1] * c * ELT[dtype]
    t = {"hbm": act / (hw["hbm_tb_s"] * 1e12) * 1e6, "l2": 3 * act / (hw["l2_tb_s"] * 1e12) * 1e6}
    bound = max(t, key=t.get)
    return {"us": t[bound] + hw["launch_gap_us"], "bound": bound, "terms_us": {k: round(v, 2) for k, v in t.items()}}


# ---- the loss kernels ---------------------------------------------------------------------------

def _demangle(name: str) -> str:
    """``c++filt`` of a kernel symbol without namespace and parameters: ``forward_partials<float, float>``."""
    tool = shutil.which("c++filt")
    if not tool:
        return name
    full = subprocess.run([tool, name], capture_output=True, text=True).stdout.strip()
    full = full.replace("(anonymous namespace)::", "").removeprefix("void ")
    return full.split("(")[0].rsplit("::", 1)[-1]


VGG19_TAPS = {"relu1_1": (64, 1), "relu2_1": (128, 2), "relu3_1": (256, 4), "relu4_1": (512, 8), "relu5_1": (512, 16)}


def loss_report(patch=192, batch=16, negatives=10, hw=H100) -> dict:
    """nvcc resource usage + SASS size of every kernel in ``csrc/cuda/*.cu``, and the HBM floor of
    the contrastive op (forward reads anchor, positive and the K shared negatives once; backward
    reads them again and writes both gradients)."""
    kernels = {}
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    with tempfile.TemporaryDirectory() as tmp:
        for src in sorted((ROOT / "csrc" / "cuda").glob("*.cu")):
            obj = Path(tmp) / f"{src.stem}.o"
            proc = subprocess.run([nvcc, "-c", str(src), "-o", str(obj), "-O3", "-arch=sm_90", "--resource-usage"],
                                  capture_output=True, text=True)
            if proc.returncode:
                kernels[src.name] = {"error": proc.stderr[-2000:]}
                continue
            sass = subprocess.run([_tool("cuobjdump"), "-sass", str(obj)], capture_output=True, text=True, check=True).stdout
            counts = {}
            for block in re.split(r"\n\s+Function : ", sass)[1:]:
                name = block.split("\n", 1)[0].strip()
                counts[name] = sum(1 for line in block.splitlines() if _INSTR.search(line))
            for block in (proc.stdout + proc.stderr).split("Compiling entry function '")[1:]:
                name = block.split("'", 1)[0]
                num = lambda pattern: int(m.group(1)) if (m := re.search(pattern, block)) else 0
                kernels[_demangle(name)] = {
                    "regs": num(r"Used (\d+) registers"), "stack": num(r"(\d+) bytes stack frame"),
                    "spill_stores": num(r"(\d+) bytes spill stores"), "shared": num(r"(\d+) bytes smem"),
                    "sass_instrs": counts.get(name)}
    elements = sum(c * (patch // d) ** 2 for c, d in VGG19_TAPS.values())  # per sample, all taps
    fwd = (2 * batch + negatives) * elements * 4
    bwd = fwd + 2 * batch * elements * 4
    floor = lambda b: round(b / (hw["hbm_tb_s"] * 1e12) * 1e6, 1)
    sys.path.insert(0, str(ROOT / "bench"))
    from loss import cuda_l2_estimate, l2_table  # the kernels' L2 traffic model (bench/loss.py --l2-estimate)

    taps = cuda_l2_estimate(patch, batch, negatives)
    unique, requested = sum(r["unique_mb"] for r in taps), sum(r["requested_mb"] for r in taps)
    return {"kernels": kernels, "geometry": {"patch": patch, "batch": batch, "negatives_shared": negatives, "dtype": "fp32",
                                            "elements_per_sample": elements},
            "unique_bytes": {"forward": fwd, "backward": bwd},
            "hbm_floor_us": {"forward": floor(fwd), "backward": floor(bwd), "total": floor(fwd + bwd)},
            "l2_estimate": {"taps": taps, "unique_mb": round(unique, 1), "requested_mb": round(requested, 1),
                            "ratio": round(requested / unique, 3), "table": l2_table(patch, batch, negatives)}}


# ---- the report ---------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", default=",".join(f"{a}:{w}" for a, w in STUDENTS), help="arch:width,...")
    parser.add_argument("--dtypes", default="fp16,bf16,fp32")
    parser.add_argument("--lr", default="180x320", help="LR input HxW (x4 output: 720x1280)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compiles")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_static_sm90"))
    parser.add_argument("--no-loss", action="store_true", help="skip the CUDA loss kernels")
    args = parser.parse_args(argv)
    lr = tuple(int(v) for v in args.lr.lower().split("x"))
    dtypes = [d.strip() for d in args.dtypes.split(",")]
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"--dtypes: expected names from {list(DTYPES)}, got {d!r}")
    students = []
    for item in args.students.split(","):
        arch, _, width = item.partition(":")
        students.append((arch.strip(), float(width or 1.0)))

    plans = {f"{a}:{w}": student_layers(a, w) for a, w in students}
    variants = list(dict.fromkeys(l for layers in plans.values() for l in layers if isinstance(l, ConvLayer)))
    # fp16: every tile the autotuner keeps, for one representative of each shape class (channels,
    # taps, shuffle, resolution); the model picks the best (a static autotune) for the whole class
    classes = {}
    for v in variants:
        classes.setdefault((v.c_in, v.c_out, v.k, v.shuffle, v.rel), v)
    jobs = [(v, "fp16", t, lr) for v in classes.values() for t in candidate_tiles(v, lr)]
    with ProcessPoolExecutor(args.jobs) as pool:
        fp16 = dict(zip([(j[0], j[2]) for j in jobs], pool.map(_compile_conv, jobs)))
    ranked = {}
    for key, v in classes.items():
        ranked[key] = sorted((estimate_conv(v, "fp16", t, s, lr)["us"], t, s["shared_bytes"]) for (vv, t), s in fp16.items()
                             if vv == v and "error" not in s and occupancy(s["regs"], s["shared_bytes"], t[-1] * 32))
    # bf16 and fp32 take fp16's best tile whose shared memory still fits at their element size
    best = {}
    for v in variants:
        for d in dtypes:
            fits = [t for _, t, shared in ranked[(v.c_in, v.c_out, v.k, v.shuffle, v.rel)]
                    if shared * ELT[d] // 2 <= H100["smem_per_block"]]
            best[(v, d)] = fits[0]
    others = [(v, d, best[(v, d)], lr) for v in variants for d in dtypes if d != "fp16" or (v, best[(v, d)]) not in fp16]
    with ProcessPoolExecutor(args.jobs) as pool:
        static = dict(zip([(j[0], j[1]) for j in others], pool.map(_compile_conv, others)))
    static.update({(v, "fp16"): fp16[(v, best[(v, "fp16")])] for v in variants if (v, best[(v, "fp16")]) in fp16})
    persistent = persistent_static(variants, dtypes, lr, args.jobs)

    report = {"when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python bench/gpu_static.py", *(argv if argv is not None else sys.argv[1:])]),
              "triton": __import__("triton").__version__, "torch": torch.__version__,
              "model": H100, "lr": lr, "scale": SCALE, "note": "every time is an ESTIMATE (no GPU ran any of this)",
              "students": {}, "kernels": {}, "tiles_tried_fp16": {}}
    for v in classes.values():
        report["tiles_tried_fp16"][_name(v)] = [
            {"tile": t, **({"est_us": round(estimate_conv(v, "fp16", t, s, lr)["us"], 2), "instrs_per_64x64x16": s.get("instrs_per_64x64x16"),
                           "regs": s["regs"]} if "error" not in s else {"error": s["error"]})}
            for (vv, t), s in fp16.items() if vv == v]
    for name, layers in plans.items():
        for d in dtypes:
            rows, total = [], 0.0
            c_ca = next((l.c_out for l in layers if isinstance(l, ConvLayer) and l.pool), 0)
            for layer in layers:
                if layer == "ca_residual":
                    est = estimate_ca(c_ca, lr, d)
                    rows.append({"layer": "ca_residual", **est})
                else:
                    s = static[(layer, d)]
                    if "error" in s:
                        rows.append({"layer": _name(layer), "error": s["error"]})
                        continue
                    est = estimate_conv(layer, d, best[(layer, d)], s, lr)
                    report["kernels"][f"{_name(layer)} {d}"] = s
                    rows.append({"layer": _name(layer), "tile": best[(layer, d)], **est})
                    if (layer, d) in persistent:
                        tile, ps = persistent[(layer, d)]
                        report["kernels"][f"{_name(layer)} {d} persistent"] = ps
                        rows[-1]["persistent"] = {"tile": tile, **(estimate_persistent(layer, d, tile, ps, lr) if "error" not in ps else ps)}
                        rows[-1]["dispatch"] = "persistent" if _dispatches_persistent(layer, d) else "v2"
                chosen = rows[-1].get("persistent") if rows[-1].get("dispatch") == "persistent" else rows[-1]
                total += chosen.get("us", 0.0)
            complete = all("error" not in r for r in rows)  # no estimate for a frame with a layer that failed
            grouped = {}  # identical launches once, with their count, in order of first use
            for r in rows:
                grouped.setdefault(r["layer"], dict(r, count=0))["count"] += 1
            report["students"].setdefault(name, {})[d] = {"layers": list(grouped.values()),
                                                          "frame_ms_estimate": round(total / 1e3, 3) if complete else None}
    report["decisions"] = decisions(report)
    if not args.no_loss:
        report["loss"] = loss_report()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


def persistent_static(variants: list, dtypes: list, lr: tuple, jobs: int) -> dict:
    """``{(layer, dtype): (tile, static numbers)}`` of the persistent kernel for every layer it can run:
    all its tiles compiled (fp16, and fp32 whose weights take twice the shared memory) on one layer of
    each (channels, resolution) class, the tile the model rates fastest kept (bf16 takes fp16's), then
    that tile compiled for every layer of the class. ``tile`` None: no tile compiles, the error instead."""
    eligible = [v for v in variants if persistent_eligible(v)]
    classes = {}
    for v in eligible:
        classes.setdefault((v.c_in, v.rel), v)
    rank_dtype = {d: "fp32" if d == "fp32" else "fp16" for d in dtypes}
    jobs_1 = [(v, d, t, lr) for v in classes.values() for d in sorted(set(rank_dtype.values())) for t in persistent_tiles(v, lr)]
    with ProcessPoolExecutor(jobs) as pool:
        tried = dict(zip([(j[0], j[1], j[2]) for j in jobs_1], pool.map(_compile_persistent, jobs_1)))
    best = {}
    for (c, rel), rep in classes.items():
        for rd in set(rank_dtype.values()):
            ests = [(estimate_persistent(rep, rd, t, s, lr), t) for (v, d, t), s in tried.items() if v == rep and d == rd and "error" not in s]
            ests = sorted((e["us"], t) for e, t in ests if "error" not in e)
            errors = [s["error"] for (v, d, t), s in tried.items() if v == rep and d == rd and "error" in s]
            best[(c, rel, rd)] = ests[0][1] if ests else {"error": errors[0] if errors else "no tile fits on an SM"}
    out = {}
    todo = []
    for v in eligible:
        for d in dtypes:
            tile = best[(v.c_in, v.rel, rank_dtype[d])]
            if isinstance(tile, dict):
                out[(v, d)] = (None, tile)
            elif (v, d, tile) in tried:
                out[(v, d)] = (tile, tried[(v, d, tile)])
            else:
                todo.append((v, d, tile, lr))
    with ProcessPoolExecutor(jobs) as pool:
        out.update({(j[0], j[1]): (j[2], s) for j, s in zip(todo, pool.map(_compile_persistent, todo))})
    return out


def _dispatches_persistent(layer: ConvLayer, dtype: str) -> bool:
    """Whether the Triton backend runs this layer on the persistent kernel (``conv2d_persistent.MODEL_FASTER``)."""
    from csd_fast.kernels import conv2d_persistent

    return conv2d_persistent.model_prefers(layer.c_in, DTYPES[dtype])


def decisions(report: dict) -> list:
    """The optional kernels of the brief, from the ESTIMATES of each student's rows: the persistent
    weight-stationary conv against v2 on every body conv it runs (both compiled for sm_90, both
    modelled; the frame gain where the model prefers it, per dtype); a fused residual block saves at
    most one launch gap and the intermediate's HBM write, and costs conv1 over the tile's halo
    (rows + 2) x (TILE_W + 2), padded to a power of two for the MMA (fp16 relu body conv)."""
    notes = []
    for name, per in report["students"].items():
        for d, v in per.items():
            pairs = [r for r in v["layers"] if "persistent" in r and "us" in r]
            if not pairs:
                continue
            parts = [f"`{r['layer']}` v2 {r['us']:.2f} us vs persistent "
                     + (f"{r['persistent']['us']:.2f} us ({r['us'] / r['persistent']['us']:.2f}x)" if "us" in r["persistent"]
                        else f"- ({r['persistent']['error'][:60]})") for r in pairs]
            gain = sum(r["count"] * max(0.0, r["us"] - r["persistent"].get("us", r["us"])) for r in pairs)
            notes.append(f"{name} {d}: persistent vs v2: {'; '.join(parts)}. Where faster, the frame saves {gain:.2f} us "
                         f"(ESTIMATE); dispatched: {', '.join(sorted({r['dispatch'] for r in pairs}))}.")
        rows = [r for r in per.get("fp16", {}).get("layers", []) if "tile" in r and len(r["tile"]) == 6 and "[relu]" in r["layer"]]
        if not rows:
            continue
        r = rows[0]
        bm, bn, bk, tw, _, _ = r["tile"]
        t = r["terms_us"]
        halo = (1 << ((bm // tw + 2) * (tw + 2) - 1).bit_length()) / bm
        extra = (halo - 1) * max(t["tensor"], t["issue"])
        saved = report["model"]["launch_gap_us"] + t["hbm"]
        notes.append(f"{name}: fused residual block: saves <= {saved:.2f} us (a launch gap + the intermediate's HBM term), "
                     f"costs >= {extra:.2f} us (conv1 on {halo:.2f}x the pixels for the halo): "
                     f"{'pays' if saved > extra else 'does not pay'}.")
    return notes


def _name(layer: ConvLayer) -> str:
    flags = [f for f, on in (("relu", layer.relu), ("res", layer.residual), ("pool", layer.pool), ("mean_in", layer.mean_in),
                             ("mean_out", layer.mean_out), ("nchw_in", layer.in_nchw), ("nchw_out", layer.out_nchw)) if on]
    if layer.shuffle > 1:
        flags.append(f"shuffle{layer.shuffle}")
    if layer.in_buf_c:
        flags.append(f"in_slice_of_{layer.in_buf_c}")
    if layer.out_buf_c:
        flags.append(f"out_slice_of_{layer.out_buf_c}")
    return f"{layer.k}x{layer.k} {layer.c_in}->{layer.c_out} @{layer.rel}x" + (f" [{','.join(flags)}]" if flags else "")


def markdown(report: dict) -> str:
    m = report["model"]
    lines = [
        f"# Static GPU report: {m['device']} — every time is an ESTIMATE",
        "",
        f"{report['when']}, triton {report['triton']}, torch {report['torch']}. `{report['command']}`",
        "",
        "Nothing here ran on a GPU: kernels were compiled ahead of time for sm_90 and their SASS read;",
        "times come from a roofline model (per layer: max of the terms below, + launch gap):",
        "",
        f"- tensor: MACs executed by the tiles (padding included) x 2 / {m['tensor_tflops']['fp16']} TFLOP/s fp16/bf16,"
        f" {m['tensor_tflops']['fp32']} TF32 (dense), / wave efficiency",
        f"- hbm: outputs and weights, plus inputs and residuals except LR activation sets up to "
        f"{m['l2_resident_bytes'] / 2**20:.0f} MB (read from L2, where the previous layer wrote them) / {m['hbm_tb_s']} TB/s",
        f"- l2: bytes requested from L2 (weights every K step; activations through L1 once per tile + halo when the footprints fit "
        f"in L1 = {m['l1_bytes'] // 1024} KB - shared memory, else every K step) / {m['l2_tb_s']} TB/s (assumed)",
        f"- issue: SASS instructions per warp (main-loop body x trips + the rest once) x warps / "
        f"({m['issue_per_sm_per_clock']} per SM per clock x {m['sms']} SMs x {m['clock_ghz']} GHz), / wave efficiency",
        f"- launch gap {m['launch_gap_us']} us per kernel (CUDA graph, assumed)",
        "- persistent rows (the weight-stationary conv beside v2 on the body convs): the same terms for its "
        "min(tiles, SMs x programs per SM) programs, each reading the weights once and looping over <= ceil(tiles / programs) "
        "pixel tiles; the busiest SM sets the pace; smem must fit 227 KB per program (the tiles that do not are dropped)",
        "- per-frame totals use the kernel the Triton backend dispatches per layer (marked `dispatched`)",
        "",
        f"LR {report['lr'][0]}x{report['lr'][1]}, x{report['scale']}, batch 1.",
        "",
        "## Per-frame estimates (ms)",
        "",
        "| student | " + " | ".join(next(iter(report["students"].values())).keys()) + " |",
        "|---|" + "---|" * len(next(iter(report["students"].values()))),
    ]
    for name, per in report["students"].items():
        lines.append(f"| {name} | " + " | ".join("incomplete" if v["frame_ms_estimate"] is None else f"{v['frame_ms_estimate']:.3f}"
                                                 for v in per.values()) + " |")
    for name, per in report["students"].items():
        for d, v in per.items():
            lines += ["", f"## {name} {d}: layers (ESTIMATED us)", "",
                      "| layer | count | tile (M,N,K,TW,st,w) | est us each | bound | tensor | hbm | l2 | issue | regs | spill instrs | smem | SASS/64x64x16 wgmma |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in v["layers"]:
                lname, count = r["layer"], r["count"]
                if "error" in r:
                    lines.append(f"| {lname} | {count} | - | error: {r['error']} |")
                    continue
                t, s = r["terms_us"], report["kernels"].get(f"{r['layer']} {d}", {})
                if "x_hbm_floor" in r:
                    lname += f" (small-C_out kernel: {r['x_hbm_floor']}x its HBM floor)"
                if "dispatch" in r:
                    lname += f" (v2{', dispatched' if r['dispatch'] == 'v2' else ''})"
                lines.append(
                    f"| {lname} | {count} | {r.get('tile', '-')} | {r['us']:.2f} | {r['bound']} | {t.get('tensor', '-')} | {t['hbm']} | "
                    f"{t.get('l2', '-')} | {t.get('issue', '-')} | {s.get('regs', '-')} | {s.get('spill_instrs', '-')} | "
                    f"{s.get('shared_bytes', '-')} | {s.get('instrs_per_64x64x16', '-')} |")
                if "persistent" in r:
                    p, s = r["persistent"], report["kernels"].get(f"{r['layer']} {d} persistent", {})
                    pname = f"{r['layer']} (persistent{', dispatched' if r['dispatch'] == 'persistent' else ''})"
                    if "error" in p:
                        lines.append(f"| {pname} | {count} | {p.get('tile') or '-'} | error: {p['error']} |")
                        continue
                    t = p["terms_us"]
                    lines.append(
                        f"| {pname} | {count} | {p['tile']} (M,TW,per SM,st,w); {p['ctas']} programs x <= {p['tiles_per_program']} tiles | "
                        f"{p['us']:.2f} | {p['bound']} | {t['tensor']} | {t['hbm']} | {t['l2']} | {t['issue']} | {s['regs']} | "
                        f"{s['spill_instrs']} | {s['shared_bytes']} | {s.get('instrs_per_64x64x16', '-')} |")
    if report.get("decisions"):
        lines += ["", "## Optional kernels: do they pay (from the ESTIMATES above)?", ""] + [f"- {n}" for n in report["decisions"]]
    if "loss" in report:
        loss = report["loss"]
        g = loss["geometry"]
        lines += ["", "## CUDA loss kernels (nvcc -arch=sm_90 --resource-usage; cuobjdump -sass)", "",
                  f"VGG19 taps relu1_1..relu5_1 of {g['patch']}x{g['patch']} patches, B={g['batch']}, K={g['negatives_shared']} shared "
                  f"negatives, {g['dtype']}: unique bytes forward {loss['unique_bytes']['forward'] / 1e6:.0f} MB, backward "
                  f"{loss['unique_bytes']['backward'] / 1e6:.0f} MB; HBM floor (ESTIMATE) forward {loss['hbm_floor_us']['forward']} us, "
                  f"backward {loss['hbm_floor_us']['backward']} us.", "",
                  "| kernel | regs | stack | spill stores | shared | SASS instrs |", "|---|---|---|---|---|---|"]
        for name, k in loss["kernels"].items():
            lines.append(f"| `{name}` | " + (" | ".join(str(k.get(c, "-")) for c in ("regs", "stack", "spill_stores", "shared", "sass_instrs")))
                         + " |" if "error" not in k else f"| {name} | error |")
        l2 = loss["l2_estimate"]
        lines += ["", f"Bytes the kernels request from L2 vs the unique bytes, forward + backward (ESTIMATE): "
                      f"{l2['requested_mb']:.1f} MB requested / {l2['unique_mb']:.1f} MB unique = {l2['ratio']:.3f}x.", "",
                  l2["table"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
