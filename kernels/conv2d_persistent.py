"""A weight-stationary persistent 3x3 'same' conv for the body convs (C_in = C_out = C <= 64).

The implicit-GEMM kernel (``conv2d.py``) launches one program per pixel tile, and every program
streams its 9 * C x C weights from L2 once per K step. Here ``min(#tiles, #SMs * PROGRAMS_PER_SM)``
programs each load the whole packed weight ``[9*C, C]`` once, as nine ``[C, C]`` tap matrices
that stay on chip (the tensor-core B operands, loop invariant: shared memory on sm_90), and loop
over the pixel tiles of the whole batch with a stride of the grid size:

    for tile in range(program_id, N * tiles_per_image, num_programs):
        out[tile] = epilogue( sum_{t=0..8} A_t[tile] @ W_t )      A_t: the tile's pixels shifted by tap t

A tile is ``BLOCK_M // TILE_W`` rows x ``TILE_W`` columns of one image (rows then columns then
images in tile order). Index math as in v2: int32 within an image (the launcher checks every
per-image extent < 2^31), int64 only for the image base; each tap's border mask is computed once
per tile. Epilogue (each optional), in the order of ``conv2d``: ``y = acc + bias``,
``y = residual + res_scale * y``, ``y = relu(y)``. Any input/output strides (NHWC is the fast layout).

Dispatch: not chosen by ``conv2d`` on its own. ``conv2d(..., persistent=True)`` runs it (a
ValueError if :func:`handles` refuses the layer); the Triton backend asks for it only on the layers
where ``bench/gpu_static.py``'s roofline model estimates it faster than v2 (:data:`MODEL_FASTER`,
checked against the committed report by ``tests/test_gpu_static.py``). Its own tiles are
autotuned (and cached on disk) like v2's, so on a GPU the tile and the residency are measured.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tune_cache import launch_tuned, tune_key
from .utils import bench_fn, size_bucket, tile_configs

MAX_C = 64  # 9 tap matrices of C x C stay on chip: 72 KB fp16, 144 KB fp32 at C = 64

# (BLOCK_M, TILE_W, PROGRAMS_PER_SM, num_stages, num_warps); PROGRAMS_PER_SM sets the grid only.
# num_stages 2 double-buffers the nine A tiles in shared memory (sm_90, fp16, C = 64, BLOCK_M = 64:
# 72 KB weights + 2 x 72 KB A = 224 KB, one program per SM); 1 loads A through registers into one
# buffer (80 KB, two programs per SM).
_GPU_TILES = [
    (64, 32, 1, 2, 4), (64, 32, 2, 1, 4), (64, 64, 2, 1, 4), (64, 16, 2, 1, 4),
    (128, 64, 2, 1, 8), (128, 32, 1, 2, 8), (64, 32, 1, 1, 4),  # the last: TF32 at C = 64 (144 KB weights)
]
# two small tiles (the autotuner runs on CPU too); a grid of at most 2 programs per "SM" of the
# interpreter (:func:`_num_sms`) so the tile loop runs many iterations in the tests
_INTERPRETER_TILES = [(32, 8, 1, 1, 4), (16, 4, 2, 1, 4)]
_NAMES = ("BLOCK_M", "TILE_W", "PROGRAMS_PER_SM")

# (C, dtype) of the body convs where bench/gpu_static.py's model (ESTIMATES, sm_90, LR 180x320) puts
# this kernel ahead of v2 on some layer and behind it on none; the Triton backend dispatches these only.
# bench/results/gpu_static_sm90.md: EDSR 64 ch. 1.07x (fp16/bf16), 1.00-1.09x (TF32); RCAN 16 ch.
# 1.85-2.80x; CARN 32 ch. 1.43-3.08x (v2's narrow tiles re-read A from L2 every K step).
# Re-derive from the report when either kernel changes (tests/test_gpu_static.py checks they agree).
MODEL_FASTER: frozenset = frozenset(
    (c, dtype) for c in (16, 32, 64) for dtype in (torch.float16, torch.bfloat16, torch.float32)
)


def _prune(configs, named_args, **kwargs):
    """Drop tiles wider than the image (TILE_W beyond its width rounded up to a power of two, min 16)."""
    w_max = max(16, {**named_args, **kwargs}["W_BUCKET"])
    return [c for c in configs if c.kwargs["TILE_W"] <= w_max] or configs[:1]


@triton.jit
def _tap(acc, x_tile, oh, ow, H, W, pix_ok, c_ok, w_tap, sxh, sxw,
         DH: tl.constexpr, DW: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """``acc + A_t @ W_t`` for the tap shifted by (DH, DW): pixels outside the image read as 0 (padding)."""
    ih = oh + DH
    iw = ow + DW
    inside = pix_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    a = tl.load(x_tile + (DH * sxh + DW * sxw), mask=inside[:, None] & c_ok[None, :], other=0.0, cache_modifier=".ca")
    return tl.dot(a.to(w_tap.dtype), w_tap, acc, input_precision=DOT_PRECISION)


@triton.autotune(
    configs=tile_configs(_GPU_TILES, _INTERPRETER_TILES, _NAMES),
    key=["C", "NHW_BUCKET", "W_BUCKET"],
    prune_configs_by={"early_config_prune": _prune},
    do_bench=bench_fn(),
)
@triton.jit
def _conv3x3_persistent_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, res_ptr,
    N, H, W, NHW_BUCKET, W_BUCKET,  # *_BUCKET: next powers of two of N*H*W and W, read only by the autotuner
    sxn, sxc, sxh, sxw,
    son, soc, soh, sow,
    srn, src, srh, srw,
    swk, swn,
    res_scale,
    C: tl.constexpr, BLOCK_C: tl.constexpr, RELU: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, TILE_W: tl.constexpr, PROGRAMS_PER_SM: tl.constexpr,  # PROGRAMS_PER_SM: the grid's
):
    c = tl.arange(0, BLOCK_C)
    c_ok = c < C
    # the nine [C, C] tap matrices of the packed weight (row (dh*3 + dw)*C + ci), loaded once per program
    w_mask = c_ok[:, None] & c_ok[None, :]
    w_tile = w_ptr + (c * swk)[:, None] + (c * swn)[None, :]
    w0 = tl.load(w_tile + 0 * C * swk, mask=w_mask, other=0.0)
    w1 = tl.load(w_tile + 1 * C * swk, mask=w_mask, other=0.0)
    w2 = tl.load(w_tile + 2 * C * swk, mask=w_mask, other=0.0)
    w3 = tl.load(w_tile + 3 * C * swk, mask=w_mask, other=0.0)
    w4 = tl.load(w_tile + 4 * C * swk, mask=w_mask, other=0.0)
    w5 = tl.load(w_tile + 5 * C * swk, mask=w_mask, other=0.0)
    w6 = tl.load(w_tile + 6 * C * swk, mask=w_mask, other=0.0)
    w7 = tl.load(w_tile + 7 * C * swk, mask=w_mask, other=0.0)
    w8 = tl.load(w_tile + 8 * C * swk, mask=w_mask, other=0.0)
    bias = tl.zeros((BLOCK_C,), dtype=tl.float32)
    if HAS_BIAS:
        bias += tl.load(b_ptr + c, mask=c_ok, other=0.0)

    ROWS: tl.constexpr = BLOCK_M // TILE_W
    tiles_w = tl.cdiv(W, TILE_W)
    per_image = tl.cdiv(H, ROWS) * tiles_w
    i = tl.arange(0, BLOCK_M)
    for tile in range(tl.program_id(0), N * per_image, tl.num_programs(0)):
        n = (tile // per_image).to(tl.int64)
        t = tile % per_image
        oh = (t // tiles_w) * ROWS + i // TILE_W  # int32 within the image
        ow = (t % tiles_w) * TILE_W + i % TILE_W
        pix_ok = (oh < H) & (ow < W)
        x_tile = x_ptr + n * sxn + (oh * sxh + ow * sxw)[:, None] + (c * sxc)[None, :]
        acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
        acc = _tap(acc, x_tile, oh, ow, H, W, pix_ok, c_ok, w0, sxh, sxw, -1, -1, DOT_PRECISION)
        acc = _tap(acc, x_tile, oh, ow, H, W, pix_ok, c_ok, w1, sxh, sxw, -1, 0, DOT_PRECISION)
        acc = _tap(acc, x_tile, oh, ow, H, W, pix_ok, c_ok, w2, sxh, sxw, -1, 1, DOT_PRECISION)
        acc = _tap(acc, x_tile, oh, ow, H, W, pix_ok, c_ok, w3, sxh, sxw, 0, -1, DOT_PRECISION)
        acc = _tap(acc, x_tile, oh, ow, H, W, pix_ok, c_ok, w4, sxh, sxw, 0, 0, DOT_PRECISION)
        acc = _tap(acc, x_tile, oh, ow, H, W, pix_ok, c_ok, w5, sxh, sxw, 0, 1, DOT_PRECISION)
        acc = _tap(acc, x_tile, oh, ow, H, W, pix_ok, c_ok, w6, sxh, sxw, 1, -1, DOT_PRECISION)
        acc = _tap(acc, x_tile, oh, ow, H, W, pix_ok, c_ok, w7, sxh, sxw, 1, 0, DOT_PRECISION)
        acc = _tap(acc, x_tile, oh, ow, H, W, pix_ok, c_ok, w8, sxh, sxw, 1, 1, DOT_PRECISION)

        acc += bias[None, :]
        out_mask = pix_ok[:, None] & c_ok[None, :]
        if HAS_RES:
            r = tl.load(res_ptr + n * srn + (oh * srh + ow * srw)[:, None] + (c * src)[None, :], mask=out_mask)
            acc = r.to(tl.float32) + res_scale * acc
        if RELU:
            acc = tl.maximum(acc, 0.0)
        dst = out_ptr + n * son + (oh * soh + ow * sow)[:, None] + (c * soc)[None, :]
        tl.store(dst, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


def handles(k: int, c_in: int, c_out: int, shuffle: int, pool, mean_in, mean_out) -> bool:
    """True for the convs this kernel runs: 3x3, C_in = C_out <= 64, no shuffle, pooling or mean shift."""
    return k == 3 and c_in == c_out <= MAX_C and shuffle == 1 and pool is None and mean_in is None and mean_out is None


def model_prefers(c: int, dtype: torch.dtype) -> bool:
    """True when the static report estimates this kernel faster than v2 for a body conv of ``c`` channels in ``dtype``."""
    return (c, dtype) in MODEL_FASTER


def _num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of the GPU; 2 under the interpreter (a small grid, a long tile loop)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 2


def launch(x, weight, bias, out, residual, res_scale: float, relu: bool, dot_precision: str) -> None:
    """Run the conv (arguments already checked by ``conv2d_nhwc``)."""
    n, c, h, w = x.shape
    nhw_bucket, w_bucket = size_bucket(n * h * w), size_bucket(w)
    key = tune_key("conv3x3_persistent", x.device, c=c, nhw=nhw_bucket, w=w_bucket,
                   dtypes=f"{x.dtype}/{weight.dtype}/{out.dtype}")
    sms = _num_sms(x.device)
    res_strides = residual.stride() if residual is not None else (0, 0, 0, 0)

    def grid(meta):
        tiles = n * triton.cdiv(h, meta["BLOCK_M"] // meta["TILE_W"]) * triton.cdiv(w, meta["TILE_W"])
        return (min(tiles, sms * meta["PROGRAMS_PER_SM"]),)

    launch_tuned(
        _conv3x3_persistent_kernel, grid, key,
        x, weight, bias, out, residual, n, h, w, nhw_bucket, w_bucket,
        *x.stride(), *out.stride(), *res_strides, *weight.stride(), float(res_scale),
        C=c, BLOCK_C=max(16, triton.next_power_of_2(c)), RELU=relu, HAS_BIAS=bias is not None,
        HAS_RES=residual is not None, DOT_PRECISION=dot_precision,
    )
