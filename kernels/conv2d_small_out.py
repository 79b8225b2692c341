"""A 3x3 'same' convolution to at most 4 output channels (the SR tail, 64 -> 3 at HR) reading its input once.

The implicit-GEMM kernel (``conv2d.py``) pads N = 3 to a 16-wide tensor-core tile and streams the
input once per tap (9 times). Here a program owns a strip of ``TILE_W`` output columns over
``ROWS`` output rows and walks down the input rows, each row ``i`` loaded once (its left and right
neighbours are the same lines, read again through L1):

    Z_i[w, dh*4 + c] = sum_dw sum_ci x[i, w + dw - 1, ci] * W[c, ci, dh, dw]     (three N=16 dots)
    out[i - 1, w, c] = Z_{i-2}[w, 0*4 + c] + Z_{i-1}[w, 1*4 + c] + Z_i[w, 2*4 + c]

so the two previous ``Z`` stay in registers (rows outside the image load as zeros: the padding).
The weights are read from the ``pack_conv_weight`` layout (``[(dh*3 + dw)*C_in + ci, c]``) once per
program. Epilogue, in order: ``+ bias``, ReLU, ``+ mean_out``; any output strides (the tail writes NCHW).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .tune_cache import launch_tuned, tune_key
from .utils import bench_fn, size_bucket, tile_configs

MAX_C_OUT = 4
MAX_C_IN = 128  # one channel block (BLOCK_K = C_in rounded up to a power of two)

# (TILE_W, ROWS, num_stages, num_warps)
_GPU_TILES = [(64, 16, 2, 4), (128, 16, 2, 4), (64, 32, 2, 4), (128, 32, 2, 8), (32, 32, 2, 4)]
_INTERPRETER_TILES = [(16, 4, 1, 4), (16, 3, 1, 4)]


@triton.autotune(
    configs=tile_configs(_GPU_TILES, _INTERPRETER_TILES, ("TILE_W", "ROWS")),
    key=["C_IN", "C_OUT", "HW_BUCKET"],
    do_bench=bench_fn(),
)
@triton.jit
def _conv3x3_small_out_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, mean_out_ptr,
    H, W, HW_BUCKET,  # HW_BUCKET: next power of two of H*W, read only by the autotuner
    sxn, sxc, sxh, sxw,
    son, soc, soh, sow,
    swk, swn,
    C_IN: tl.constexpr, C_OUT: tl.constexpr, RELU: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_MEAN_OUT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr, TILE_W: tl.constexpr, ROWS: tl.constexpr,
):
    strip = tl.program_id(0)
    r0 = tl.program_id(1) * ROWS
    r_end = tl.minimum(r0 + ROWS, H)
    n = tl.program_id(2).to(tl.int64)
    ow = strip * TILE_W + tl.arange(0, TILE_W)  # int32 within the image
    ci = tl.arange(0, BLOCK_K)
    ci_ok = ci < C_IN
    col = tl.arange(0, 16)  # Z's columns: dh * 4 + c
    dh_of = col // 4
    c_of = col % 4
    w_mask = ci_ok[:, None] & ((dh_of < 3) & (c_of < C_OUT))[None, :]
    w_rows = ((dh_of * 3)[None, :] * C_IN + ci[:, None]) * swk + (c_of * swn)[None, :]
    w0 = tl.load(w_ptr + w_rows, mask=w_mask, other=0.0)  # dw = 0, 1, 2: rows shift by C_IN
    w1 = tl.load(w_ptr + w_rows + C_IN * swk, mask=w_mask, other=0.0)
    w2 = tl.load(w_ptr + w_rows + 2 * C_IN * swk, mask=w_mask, other=0.0)

    x_img = x_ptr + n * sxn
    cols_l = ((ow - 1) * sxw)[:, None] + (ci * sxc)[None, :]
    ok_l = ((ow >= 1) & (ow - 1 < W))[:, None] & ci_ok[None, :]
    ok_c = (ow < W)[:, None] & ci_ok[None, :]
    ok_r = (ow + 1 < W)[:, None] & ci_ok[None, :]
    prev2 = tl.zeros((TILE_W, 16), dtype=tl.float32)
    prev = tl.zeros((TILE_W, 16), dtype=tl.float32)
    c_out = tl.arange(0, 4)
    c_ok = c_out < C_OUT
    bias = tl.zeros((4,), dtype=tl.float32)
    if HAS_BIAS:
        bias += tl.load(b_ptr + c_out, mask=c_ok, other=0.0)
    mean = tl.zeros((4,), dtype=tl.float32)
    if HAS_MEAN_OUT:
        mean += tl.load(mean_out_ptr + c_out, mask=c_ok, other=0.0)
    out_img = out_ptr + n * son
    out_cols = (ow * sow)[:, None] + (c_out * soc)[None, :]
    out_ok = (ow < W)[:, None] & c_ok[None, :]
    for i in range(r0 - 1, r0 + ROWS + 1):  # input rows; row i completes output row i - 1
        row_ok = (i >= 0) & (i < H)
        row = x_img + i * sxh + cols_l
        xl = tl.load(row, mask=ok_l & row_ok, other=0.0, cache_modifier=".ca")
        xc = tl.load(row + sxw, mask=ok_c & row_ok, other=0.0, cache_modifier=".ca")
        xr = tl.load(row + 2 * sxw, mask=ok_r & row_ok, other=0.0, cache_modifier=".ca")
        z = tl.dot(xl.to(w0.dtype), w0, input_precision=DOT_PRECISION)
        z = tl.dot(xc.to(w1.dtype), w1, z, input_precision=DOT_PRECISION)
        z = tl.dot(xr.to(w2.dtype), w2, z, input_precision=DOT_PRECISION)
        t = tl.where(dh_of[None, :] == 0, prev2, 0.0) + tl.where(dh_of[None, :] == 1, prev, 0.0)
        t += tl.where(dh_of[None, :] == 2, z, 0.0)
        y = tl.sum(tl.reshape(t, (TILE_W, 4, 4)), axis=1) + bias[None, :]  # [w, c]: summed over dh
        if RELU:
            y = tl.maximum(y, 0.0)
        y += mean[None, :]
        o = i - 1
        o_vec = c_out * 0 + o  # a vector: the interpreter types (tensor & scalar mask) as int32
        o_ok = (o_vec >= r0) & (o_vec < r_end)
        tl.store(out_img + o * soh + out_cols, y.to(out_ptr.dtype.element_ty), mask=out_ok & o_ok[None, :])
        prev2 = prev
        prev = z


def handles(k: int, c_in: int, c_out: int, shuffle: int, residual, pool, mean_in) -> bool:
    """True for the convs this kernel runs: 3x3, C_out <= 4, C_in <= 128, no shuffle, residual, pooling or input mean."""
    return k == 3 and c_out <= MAX_C_OUT and c_in <= MAX_C_IN and shuffle == 1 and residual is None and pool is None and mean_in is None


def launch(x, weight, bias, out, mean_out, relu: bool, dot_precision: str) -> None:
    """Run the conv (arguments already checked by ``conv2d_nhwc``)."""
    n, c_in, h, w = x.shape
    c_out = weight.shape[1]
    hw_bucket = size_bucket(h * w)
    key = tune_key("conv3x3_small_out", x.device, c_in=c_in, c_out=c_out, hw=hw_bucket, dtypes=f"{x.dtype}/{weight.dtype}/{out.dtype}")

    def grid(meta):
        return (triton.cdiv(w, meta["TILE_W"]), triton.cdiv(h, meta["ROWS"]), n)

    launch_tuned(
        _conv3x3_small_out_kernel, grid, key,
        x, weight, bias, out, mean_out, h, w, hw_bucket,
        *x.stride(), *out.stride(), *weight.stride(),
        C_IN=c_in, C_OUT=c_out, RELU=relu, HAS_BIAS=bias is not None, HAS_MEAN_OUT=mean_out is not None,
        DOT_PRECISION=dot_precision, BLOCK_K=max(16, triton.next_power_of_2(c_in)),
    )
