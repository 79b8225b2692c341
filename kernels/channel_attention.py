"""RCAN's channel attention and residual, fused: ``out = x + r * sigmoid(W_u relu(W_d (pool / HW) + b_d) + b_u)``.

``pool[n, c] = sum_p r[n, c, p]`` comes from the conv that produced ``r`` (its ``pool`` epilogue).
Each program recomputes the tiny attention MLP (C x C_r, in fp32, so fp16 features cannot
overflow it) for its image, then scales a tile of pixels and adds the residual. Tensors are
logical ``[N, C, H, W]`` in channels_last (NHWC) layout.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .utils import check_tensor, interpreting

_BLOCK_P = 64 if interpreting() else 32


@triton.jit
def _ca_residual_kernel(
    x_ptr, r_ptr, out_ptr, pool_ptr, wd_ptr, bd_ptr, wu_ptr, bu_ptr,
    HW, C, CR, inv_hw,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    n = tl.program_id(1).to(tl.int64)
    cs = tl.arange(0, BLOCK_C)
    c_mask = cs < C
    rs = tl.arange(0, BLOCK_R)
    r_mask = rs < CR
    wmask = r_mask[:, None] & c_mask[None, :]

    y = tl.load(pool_ptr + n * C + cs, mask=c_mask, other=0.0) * inv_hw
    wd = tl.load(wd_ptr + rs[:, None] * C + cs[None, :], mask=wmask, other=0.0)  # W_d [CR, C]
    d = tl.sum(wd * y[None, :], axis=1) + tl.load(bd_ptr + rs, mask=r_mask, other=0.0)
    d = tl.maximum(d, 0.0)
    wu = tl.load(wu_ptr + cs[None, :] * CR + rs[:, None], mask=wmask, other=0.0)  # W_u [C, CR], read transposed
    u = tl.sum(wu * d[:, None], axis=0) + tl.load(bu_ptr + cs, mask=c_mask, other=0.0)
    s = 1.0 / (1.0 + tl.exp(-u))

    p = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    mask = (p < HW)[:, None] & c_mask[None, :]
    offs = n * HW * C + p[:, None] * C + cs[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    r = tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (x + r * s[None, :]).to(out_ptr.dtype.element_ty), mask=mask)


def _nhwc(t: Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last)


@torch.library.custom_op("csd_fast::ca_residual", mutates_args=("out",))
def ca_residual_nhwc(
    x: Tensor, r: Tensor, pool: Tensor, w_down: Tensor, b_down: Tensor, w_up: Tensor, b_up: Tensor, out: Tensor,
) -> None:
    """Write ``x + r * CA(pool)`` into ``out``; weights fp32 ``w_down [C_r, C]``, ``w_up [C, C_r]``."""
    for name, t in (("x", x), ("r", r), ("out", out)):
        check_tensor(t, name, dim=4)
        if tuple(t.shape) != tuple(x.shape) or not _nhwc(t):
            raise ValueError(f"{name}: expected a channels_last tensor of shape {tuple(x.shape)}, got {tuple(t.shape)}")
    n, c, h, w = x.shape
    cr = w_down.shape[0]
    for name, t, shape in (("pool", pool, (n, c)), ("w_down", w_down, (cr, c)), ("b_down", b_down, (cr,)),
                           ("w_up", w_up, (c, cr)), ("b_up", b_up, (c,))):
        check_tensor(t, name, dtypes=(torch.float32,))
        if tuple(t.shape) != shape or not t.is_contiguous():
            raise ValueError(f"{name}: expected a contiguous tensor of shape {shape}, got {tuple(t.shape)}")
    if n == 0 or h * w == 0:
        return
    grid = (triton.cdiv(h * w, _BLOCK_P), n)
    _ca_residual_kernel[grid](
        x, r, out, pool, w_down, b_down, w_up, b_up, h * w, c, cr, 1.0 / (h * w),
        BLOCK_P=_BLOCK_P, BLOCK_C=triton.next_power_of_2(c), BLOCK_R=max(2, triton.next_power_of_2(cr)),
    )


def ca_residual(x: Tensor, r: Tensor, pool: Tensor, w_down: Tensor, b_down: Tensor, w_up: Tensor, b_up: Tensor) -> Tensor:
    """:func:`ca_residual_nhwc` into a new channels_last tensor like ``x``; returns it."""
    out = torch.empty_like(x, memory_format=torch.channels_last)
    ca_residual_nhwc(x, r, pool, w_down, b_down, w_up, b_up, out)
    return out
