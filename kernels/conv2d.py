"""Implicit-GEMM 'same' convolution (k = 1 or 3, stride 1, zero padding k//2) with fused epilogues.

GEMM view: ``out[p, co] = sum_{kh,kw,ci} x[p + (kh-k//2, kw-k//2), ci] * Wp[(kh*k+kw)*C_in + ci, co]``
over pixels ``p`` of one image (rows, BLOCK_M) and output channels (columns, BLOCK_N); the K loop
walks the k*k taps times C_in/BLOCK_K channel blocks, fp32 accumulation with ``tl.dot``.
``Wp = pack_conv_weight(W)`` is the weight packed once as ``[k*k*C_in, C_out]``. For a conv
feeding a pixel shuffle by s its columns (and the bias, ``pack_conv_bias``) are reordered from
torch's ``co = c*s² + i*s + j`` to ``q = (i*s + j)*C + c`` (C = C_out/s²), so a tile of columns is
a run of contiguous NHWC channels of one output pixel: coalesced stores.

Index math (what the sm_90 main loop spends its issue slots on): offsets within an image are int32
(the launcher checks every per-image extent < 2^31), 64-bit only for the image base pointer; the
border masks of the k*k taps are computed once per tile into a bit set, and a tap's spatial shift
is one scalar offset for the whole tile, advanced incrementally (no division in the K loop). A tile of BLOCK_M pixels is (BLOCK_M // TILE_W) image rows
of TILE_W pixels, so neighbouring taps re-read lines the same program just loaded (the A loads go
through L1: ``.ca``). Autotune winners are cached on disk (``tune_cache.py``).

3x3 convs to at most 4 channels without residual, pooling or input mean (the SR tail) go to
``conv2d_small_out.py``, which reads its input once instead of once per tap. ``persistent=True``
runs a 3x3 body conv (C_in = C_out <= 64, bias/residual/ReLU epilogues) on the weight-stationary
persistent kernel of ``conv2d_persistent.py`` instead; only the caller chooses it (the Triton backend,
from the static report's estimates).

Tensors are indexed through their strides as logical ``[N, C, H, W]``: channels_last (NHWC) is the
fast layout, but the head reads the NCHW input and the tail writes the NCHW output directly, and
a channel slice of a larger NHWC buffer (CARN's concatenations) is a valid input or output.

Prologue/epilogue, in order (each optional):
    a = x - mean_in          on in-image pixels only: padding stays exactly 0 (head)
    y = acc + bias
    pool[n, co] += sum_p y   (fp32 atomics; RCAN channel-attention pooling)
    y = residual + res_scale * y
    y = relu(y)
    y = y + mean_out         (tail)
    out[n, q % C, h*s + (q//C) // s, w*s + (q//C) % s] = y   (pixel shuffle by s; s = 1: plain store)
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import conv2d_persistent as persistent_kernel
from . import conv2d_small_out as small_out
from .tune_cache import launch_tuned, tune_key
from .utils import bench_fn, check_tensor, dot_precision, int32_extent, size_bucket, tile_configs

# (BLOCK_M, BLOCK_N, BLOCK_K, TILE_W, num_stages, num_warps): tensor-core tiles for C_in from 3 (head)
# and C_out from 3 (tail) to 4*256 (teacher upsampler), BLOCK_M pixels as (BLOCK_M // TILE_W) rows of
# TILE_W; pruned to the layer's channel counts and width before tuning.
_GPU_TILES = [
    (128, 64, 32, 64, 3, 4), (128, 64, 64, 64, 3, 4), (128, 64, 32, 16, 3, 4), (64, 64, 32, 64, 4, 4),
    (128, 128, 32, 64, 3, 8), (64, 128, 32, 64, 4, 4), (256, 64, 32, 64, 3, 8), (256, 64, 64, 32, 3, 8),
    (128, 32, 32, 64, 4, 4), (256, 128, 32, 64, 3, 8), (128, 256, 32, 64, 3, 8), (128, 16, 32, 64, 4, 4),
    (256, 16, 64, 64, 3, 4), (128, 64, 16, 64, 3, 4), (64, 32, 16, 64, 4, 4), (128, 16, 16, 16, 4, 4),
    (256, 32, 16, 64, 3, 8), (128, 64, 64, 64, 2, 4), (128, 64, 64, 32, 2, 4), (256, 64, 64, 64, 2, 8),
    (256, 16, 16, 64, 4, 4), (256, 32, 32, 64, 3, 4),  # narrow layers (RCAN 16, CARN 32 channels): fewer, longer programs
]
# two small tiles, so the autotuner (pruning, benchmarking, reset_to_zero) also runs under the interpreter
_INTERPRETER_TILES = [(64, 32, 16, 8, 1, 4), (32, 16, 16, 4, 1, 4)]


def _prune(configs, named_args, **kwargs):
    """Drop tiles much wider than the layer: BLOCK_N beyond C_out, BLOCK_K beyond C_in, TILE_W beyond
    the image width (each rounded up to a power of two, min 16)."""
    args = {**named_args, **kwargs}
    n_max = max(16, triton.next_power_of_2(args["C_OUT"]))
    k_max = max(16, triton.next_power_of_2(args["C_IN"]))
    w_max = max(16, args["W_BUCKET"])
    kept = [c for c in configs if c.kwargs["BLOCK_N"] <= n_max and c.kwargs["BLOCK_K"] <= k_max and c.kwargs["TILE_W"] <= w_max]
    return kept or configs[:1]


@triton.autotune(
    configs=tile_configs(_GPU_TILES, _INTERPRETER_TILES),
    key=["C_IN", "C_OUT", "HW_BUCKET", "W_BUCKET", "KSIZE"],
    prune_configs_by={"early_config_prune": _prune},
    reset_to_zero=["pool_ptr"],
    do_bench=bench_fn(),
)
@triton.jit
def _conv2d_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, res_ptr, mean_in_ptr, mean_out_ptr, pool_ptr,
    H, W, HW_BUCKET, W_BUCKET,  # *_BUCKET: next powers of two of H*W and W, read only by the autotuner
    sxn, sxc, sxh, sxw,
    son, soc, soh, sow,
    srn, src, srh, srw,
    swk, swn,
    res_scale,
    C_IN: tl.constexpr, C_OUT: tl.constexpr,  # compile-time: a known K loop (few distinct values per model)
    KSIZE: tl.constexpr, SHUFFLE: tl.constexpr, RELU: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, HAS_MEAN_IN: tl.constexpr,
    HAS_MEAN_OUT: tl.constexpr, HAS_POOL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, TILE_W: tl.constexpr,
):
    # int32 offsets within an image (the launcher checks every per-image extent < 2^31); int64 only
    # for the image base pointers. A tile is (BLOCK_M // TILE_W) rows x TILE_W columns of pixels.
    tiles_w = tl.cdiv(W, TILE_W)
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    i = tl.arange(0, BLOCK_M)
    oh = (pid_m // tiles_w) * (BLOCK_M // TILE_W) + i // TILE_W
    ow = (pid_m % tiles_w) * TILE_W + i % TILE_W
    row_mask = (oh < H) & (ow < W)
    co = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    co_mask = co < C_OUT
    ks = tl.arange(0, BLOCK_K)

    # border masks of the k*k taps, hoisted out of the K loop: bit t set when tap t reads inside the image
    inside_bits = tl.zeros((BLOCK_M,), dtype=tl.int32)
    for t in tl.static_range(KSIZE * KSIZE):
        ih = oh + (t // KSIZE - KSIZE // 2)
        iw = ow + (t % KSIZE - KSIZE // 2)
        inside = row_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        inside_bits = inside_bits | (inside.to(tl.int32) << t)

    x_pix = x_ptr + n * sxn + (oh * sxh + ow * sxw)[:, None]  # one 64-bit base per row of the tile
    w_cols = w_ptr + (co * swn)[None, :]
    k_blocks = tl.cdiv(C_IN, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # a compile-time trip count (written inline: Triton 3.6's interpreter needs a literal constexpr here)
    # the tap (t = dh*KSIZE + dw) and its spatial shift are loop-carried scalars, advanced after the
    # tap's last channel block: no division in the loop
    tap = 0
    dw = 0
    shift = -(KSIZE // 2) * (sxh + sxw)
    for step in range(0, KSIZE * KSIZE * tl.cdiv(C_IN, BLOCK_K)):
        kb = step % k_blocks
        ci = kb * BLOCK_K + ks
        ci_mask = ci < C_IN
        a_mask = (((inside_bits >> tap) & 1) != 0)[:, None] & ci_mask[None, :]
        # .ca: through L1, where the tile's neighbouring taps find the lines this program just read
        a = tl.load(x_pix + (shift + ci * sxc)[None, :], mask=a_mask, other=0.0, cache_modifier=".ca")
        if HAS_MEAN_IN:
            mu = tl.load(mean_in_ptr + ci, mask=ci_mask, other=0.0)
            a = tl.where(a_mask, a.to(tl.float32) - mu[None, :], 0.0)
        b = tl.load(w_cols + ((tap * C_IN + ci) * swk)[:, None], mask=ci_mask[:, None] & co_mask[None, :], other=0.0)
        acc = tl.dot(a.to(b.dtype), b, acc, input_precision=DOT_PRECISION)
        if kb == k_blocks - 1:  # next tap: one column right, or the first column of the next row
            tap += 1
            dw += 1
            shift += sxw
            if dw == KSIZE:
                dw = 0
                shift += sxh - KSIZE * sxw

    out_mask = row_mask[:, None] & co_mask[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + co, mask=co_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_POOL:  # pool what is stored (rounded to the output dtype), like the eager model
        stored = acc.to(out_ptr.dtype.element_ty).to(tl.float32)
        tl.atomic_add(pool_ptr + n * C_OUT + co, tl.sum(tl.where(out_mask, stored, 0.0), axis=0), mask=co_mask,
                      sem="relaxed")  # a plain sum: no ordering with other memory is needed
    if HAS_RES:
        r = tl.load(res_ptr + n * srn + (oh * srh + ow * srw)[:, None] + (co * src)[None, :], mask=out_mask)
        acc = r.to(tl.float32) + res_scale * acc
    if RELU:
        acc = tl.maximum(acc, 0.0)
    if HAS_MEAN_OUT:
        acc += tl.load(mean_out_ptr + co, mask=co_mask, other=0.0)[None, :]
    if SHUFFLE == 1:
        dst = out_ptr + n * son + (oh * soh + ow * sow)[:, None] + (co * soc)[None, :]
    else:
        c_sh = C_OUT // (SHUFFLE * SHUFFLE)
        c = co % c_sh
        si = (co // c_sh) // SHUFFLE
        sj = (co // c_sh) % SHUFFLE
        dst = (out_ptr + n * son + (oh * (SHUFFLE * soh) + ow * (SHUFFLE * sow))[:, None]
               + (si * soh + sj * sow + c * soc)[None, :])
    tl.store(dst, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


def _columns(c_out: int, shuffle: int) -> Tensor:
    """Packed column ``q = (i*s + j)*C + c`` holds torch's output channel ``c*s² + i*s + j``."""
    s2 = shuffle * shuffle
    if c_out % s2:
        raise ValueError(f"shuffle: expected s*s = {s2} to divide C_out = {c_out}, got shuffle={shuffle}")
    return torch.arange(c_out).view(c_out // s2, s2).t().reshape(-1)


def pack_conv_weight(weight: Tensor, dtype: torch.dtype | None = None, shuffle: int = 1) -> Tensor:
    """``[C_out, C_in, k, k]`` -> ``[k*k*C_in, C_out]`` (row ``(kh*k+kw)*C_in + ci``), columns in
    pixel-shuffle order for ``shuffle > 1`` (see the module doc).

    16-bit weights are stored row-major (C_out contiguous); fp32 weights column-major (K contiguous,
    a transposed view): TF32 wgmma reads B only K-major, so the tile is copied 16 bytes at a time."""
    if weight.dim() != 4 or weight.shape[2] != weight.shape[3] or weight.shape[2] not in (1, 3):
        raise ValueError(f"weight: expected [C_out, C_in, k, k] with k in (1, 3), got shape {tuple(weight.shape)}")
    c_out, c_in, k, _ = weight.shape
    packed = weight.detach().permute(2, 3, 1, 0).reshape(k * k * c_in, c_out)
    packed = packed[:, _columns(c_out, shuffle).to(weight.device)].to(dtype or weight.dtype)
    return packed.t().contiguous().t() if packed.dtype == torch.float32 else packed.contiguous()


def pack_conv_bias(bias: Tensor | None, shuffle: int = 1) -> Tensor | None:
    """The bias as contiguous fp32, in the column order of ``pack_conv_weight(..., shuffle)``."""
    if bias is None:
        return None
    return bias.detach()[_columns(bias.shape[0], shuffle).to(bias.device)].float().contiguous()


def _check_conv_args(x, weight, bias, out, residual, mean_in, mean_out, pool, shuffle):
    check_tensor(x, "x", dim=4)
    check_tensor(weight, "weight", dim=2)
    check_tensor(out, "out", dim=4)
    n, c_in, h, w = x.shape
    taps, c_out = weight.shape
    k = math.isqrt(taps // c_in) if taps % c_in == 0 else 0
    if k not in (1, 3) or k * k * c_in != taps:
        raise ValueError(f"weight: expected packed [k*k*{c_in}, C_out] with k in (1, 3), got shape {tuple(weight.shape)}")
    if shuffle not in (1, 2, 3) or c_out % (shuffle * shuffle):
        raise ValueError(f"shuffle: expected 1, 2 or 3 dividing C_out={c_out} by its square, got {shuffle}")
    expected = (n, c_out // shuffle**2, h * shuffle, w * shuffle)
    if tuple(out.shape) != expected:
        raise ValueError(f"out: expected shape {expected}, got {tuple(out.shape)}")
    for name, t, shape in (("bias", bias, (c_out,)), ("mean_in", mean_in, (c_in,)),
                           ("mean_out", mean_out, (c_out,)), ("pool", pool, (n, c_out))):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")
    for name, t in (("mean_in", mean_in), ("mean_out", mean_out), ("pool", pool)):
        if t is not None and (t.dtype != torch.float32 or not t.is_contiguous()):
            raise TypeError(f"{name}: expected a contiguous float32 tensor, got {t.dtype}")
    if residual is not None:
        if shuffle != 1 or tuple(residual.shape) != tuple(out.shape):
            raise ValueError(f"residual: expected shape {tuple(out.shape)} and shuffle=1, got {tuple(residual.shape)}, shuffle={shuffle}")
        if residual.data_ptr() == out.data_ptr():
            raise ValueError("residual: must not alias out (the kernel is out of place; the autotuner reruns it)")
    if pool is not None and shuffle != 1:
        raise ValueError(f"pool: only with shuffle=1, got shuffle={shuffle}")
    for name, t in (("x", x), ("out", out), ("residual", residual)):
        if t is not None:
            int32_extent(t, name)
    return k


@torch.library.custom_op("csd_fast::conv2d_nhwc", mutates_args=("out", "pool"))
def conv2d_nhwc(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], out: Tensor,
    residual: Optional[Tensor] = None, mean_in: Optional[Tensor] = None, mean_out: Optional[Tensor] = None,
    pool: Optional[Tensor] = None, res_scale: float = 1.0, relu: bool = False, shuffle: int = 1,
    persistent: bool = False,
) -> None:
    """Write ``conv(x) (+ epilogues, see module doc)`` into ``out``; adds the per-channel sums into ``pool``.

    ``weight`` and ``bias`` come from ``pack_conv_weight`` / ``pack_conv_bias`` with the same ``shuffle``.
    ``persistent``: run the weight-stationary persistent kernel (``conv2d_persistent.py``)."""
    k = _check_conv_args(x, weight, bias, out, residual, mean_in, mean_out, pool, shuffle)
    n, c_in, h, w = x.shape
    c_out = weight.shape[1]
    if persistent and not persistent_kernel.handles(k, c_in, c_out, shuffle, pool, mean_in, mean_out):
        raise ValueError(f"persistent: expected a 3x3 conv with C_in = C_out <= {persistent_kernel.MAX_C} and no shuffle, "
                         f"pool or mean shift, got k={k}, C_in={c_in}, C_out={c_out}, shuffle={shuffle}")
    if n == 0 or h == 0 or w == 0:
        return
    if persistent:
        persistent_kernel.launch(x, weight, bias, out, residual, res_scale, relu, dot_precision())
        return
    if small_out.handles(k, c_in, c_out, shuffle, residual, pool, mean_in):  # the tail: reads its input once
        small_out.launch(x, weight, bias, out, mean_out, relu, dot_precision())
        return
    # reset_to_zero needs a tensor: an empty one stands in when no pooling is asked for
    pool_arg = pool if pool is not None else torch.empty(0, device=x.device, dtype=torch.float32)
    res_strides = (residual.stride(0), residual.stride(1), residual.stride(2), residual.stride(3)) if residual is not None else (0, 0, 0, 0)
    hw_bucket, w_bucket = size_bucket(h * w), size_bucket(w)
    key = tune_key("conv2d", x.device, c_in=c_in, c_out=c_out, k=k, hw=hw_bucket, w=w_bucket,
                   dtypes=f"{x.dtype}/{weight.dtype}/{out.dtype}", pool=pool is not None)

    def grid(meta):
        rows = meta["BLOCK_M"] // meta["TILE_W"]
        return (triton.cdiv(h, rows) * triton.cdiv(w, meta["TILE_W"]), triton.cdiv(c_out, meta["BLOCK_N"]), n)

    launch_tuned(
        _conv2d_kernel, grid, key,
        x, weight, bias, out, residual, mean_in, mean_out, pool_arg,
        h, w, hw_bucket, w_bucket,
        *x.stride(), *out.stride(), *res_strides, *weight.stride(),
        float(res_scale),
        C_IN=c_in, C_OUT=c_out, KSIZE=k, SHUFFLE=shuffle, RELU=relu,
        HAS_BIAS=bias is not None, HAS_RES=residual is not None, HAS_MEAN_IN=mean_in is not None,
        HAS_MEAN_OUT=mean_out is not None, HAS_POOL=pool is not None, DOT_PRECISION=dot_precision(),
    )


def conv2d(
    x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, *, out: Optional[Tensor] = None,
    residual: Optional[Tensor] = None, mean_in: Optional[Tensor] = None, mean_out: Optional[Tensor] = None,
    pool: Optional[Tensor] = None, res_scale: float = 1.0, relu: bool = False, shuffle: int = 1,
    out_dtype: Optional[torch.dtype] = None, persistent: bool = False,
) -> Tensor:
    """:func:`conv2d_nhwc` into ``out``, or into a new channels_last tensor of ``out_dtype``
    (default: the weight's dtype); returns ``out``."""
    if out is None:
        n, _, h, w = x.shape
        out = torch.empty(
            n, weight.shape[1] // shuffle**2, h * shuffle, w * shuffle,
            device=x.device, dtype=out_dtype or weight.dtype, memory_format=torch.channels_last,
        )
    conv2d_nhwc(x, weight, bias, out, residual, mean_in, mean_out, pool, res_scale, relu, shuffle, persistent)
    return out
