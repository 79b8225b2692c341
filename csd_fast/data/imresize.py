"""MATLAB ``imresize`` (bicubic, antialiased) on torch tensors, and the bicubic helpers of SR.

MATLAB's algorithm, per dimension (1-based pixel ``x`` of the output, scale ``s = out / in``):

* centre in input coordinates ``u = x / s + (1 - 1 / s) / 2``;
* Keys cubic kernel with ``a = -0.5``; when downscaling (``s < 1``) it is stretched to
  ``s * k(s * d)`` (width ``4 / s``): the antialiasing filter;
* taps at ``floor(u - width / 2) + 0 .. ceil(width) + 1``, weights normalized to sum 1;
* out-of-range taps mirror with the edge pixel repeated (MATLAB's ``symmetric``
  padding: ``0 -> 1``, ``-1 -> 2``, ``n + 1 -> n``).

Rows are resized first, then columns (a separable linear map; MATLAB's order differs only
by float rounding). Output size is ``ceil(in * s)``. No clamping, no rounding: SR datasets
quantize afterwards.
"""
import math

import torch
import torch.nn.functional as F

__all__ = ["imresize", "mod_crop", "bicubic_downscale", "bicubic_upsample"]


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys cubic convolution kernel, a = -0.5."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return inner + outer


def _contributions(in_len: int, out_len: int, scale: float):
    """Weights [out, taps] (float64) and 0-based input indices [out, taps] after mirroring."""
    width = 4.0 / scale if scale < 1 else 4.0
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    weights = scale * _cubic(dist * scale) if scale < 1 else _cubic(dist)
    weights = weights / weights.sum(1, keepdim=True)
    # symmetric mirroring of 1-based idx onto 1..in_len, then 0-based
    period = torch.remainder(idx - 1, 2 * in_len)
    idx0 = torch.where(period < in_len, period, 2 * in_len - 1 - period).long()
    return weights, idx0


def _resize_dim(x: torch.Tensor, dim: int, out_len: int, scale: float) -> torch.Tensor:
    weights, idx = _contributions(x.shape[dim], out_len, scale)
    weights, idx = weights.to(dtype=x.dtype, device=x.device), idx.to(x.device)
    view = [1] * x.dim()
    view[dim] = out_len
    out = None
    for t in range(idx.shape[1]):  # one gather per tap: memory stays at one output's size
        term = x.index_select(dim, idx[:, t]) * weights[:, t].view(view)
        out = term if out is None else out + term
    return out


def imresize(x: torch.Tensor, scale: float | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
    """MATLAB ``imresize(x, scale)`` / ``imresize(x, size)``, bicubic with antialiasing.

    ``x``: float tensor ``[C,H,W]`` or ``[B,C,H,W]``. Give exactly one of ``scale`` (> 0; the
    output is ``ceil(H * scale) x ceil(W * scale)``) or ``size = (out_h, out_w)`` (then the
    per-dimension scale is ``out / in``, as MATLAB).
    """
    if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4) or not x.is_floating_point():
        got = f"shape {tuple(x.shape)} dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a float tensor [C,H,W] or [B,C,H,W], got {got}")
    h, w = x.shape[-2:]
    if (scale is None) == (size is None):
        raise ValueError(f"give exactly one of scale and size, got scale={scale!r}, size={size!r}")
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        out_h, out_w = math.ceil(h * scale), math.ceil(w * scale)
        sh = sw = float(scale)
    else:
        out_h, out_w = (int(v) for v in size)
        if out_h < 1 or out_w < 1:
            raise ValueError(f"size must be two positive ints, got {size!r}")
        sh, sw = out_h / h, out_w / w
    out = _resize_dim(x, x.dim() - 2, out_h, sh)
    return _resize_dim(out, x.dim() - 1, out_w, sw)


def mod_crop(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Drop bottom rows and right columns of ``[..., H, W]`` so H and W divide by ``scale``
    (BasicSR ``mod_crop``); a view, no copy."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def bicubic_downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """LR = MATLAB ``imresize(hr, 1 / scale)``; H and W of ``hr`` must be divisible by ``scale``."""
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"hr height and width must be divisible by scale={scale}, got {h}x{w} "
                         f"(mod_crop(hr, {scale}) first gives {h - h % scale}x{w - w % scale})")
    return imresize(hr, size=(h // scale, w // scale))


def bicubic_upsample(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """PyTorch bicubic upsampling, as the official CSD negatives (``nn.Upsample(mode='bicubic')``).

    ``F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)``: Keys
    cubic with ``a = -0.75``, replicate borders, not MATLAB's kernel, not clamped.
    ``lr``: ``[B,C,H,W]`` or ``[C,H,W]``.
    """
    if lr.dim() == 3:
        return bicubic_upsample(lr[None], scale)[0]
    if lr.dim() != 4:
        raise ValueError(f"lr must be [B,C,H,W] or [C,H,W], got shape {tuple(lr.shape)}")
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)
