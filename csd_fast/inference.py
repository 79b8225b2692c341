"""Inference helpers for any SR callable ``fn([B,3,H,W]) -> [B,3,sH,sW]``: self-ensemble and tiling.

Compose them freely: ``self_ensemble(lambda y: tiled_forward(model, y, 256, 16, 4), x)``.
To run a slim model at a width, pass ``lambda y: model(y, 0.25)``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

SRFn = Callable[[Tensor], Tensor]


def _dihedral(x: Tensor, k: int) -> Tensor:
    """Transform ``k`` in 0..7 of the 8 flips/transposes: bit 2 transpose, bit 0 flip W, bit 1 flip H."""
    if k & 4:
        x = x.transpose(-2, -1)
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    return x


def _undo_dihedral(x: Tensor, k: int) -> Tensor:
    if k & 2:
        x = x.flip(-2)
    if k & 1:
        x = x.flip(-1)
    if k & 4:
        x = x.transpose(-2, -1)
    return x


def self_ensemble(fn: SRFn, x: Tensor) -> Tensor:
    """The "+" of SR papers: mean of ``fn`` over the 8 flip/transpose versions of ``x``, each undone.

    ``x``: ``[B,C,H,W]``. Runs ``fn`` 8 times; costs 8x one pass.
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"x: expected a 4-D [B, 3, H, W] tensor, got {getattr(x, 'shape', type(x).__name__)}")
    total = None
    for k in range(8):
        out = _undo_dihedral(fn(_dihedral(x, k)), k)
        total = out if total is None else total + out
    return total / 8


def tiled_forward(fn: SRFn, x: Tensor, tile: int, overlap: int, scale: int) -> Tensor:
    """Run ``fn`` on ``tile x tile`` LR tiles of ``x``, each seen with ``overlap`` extra LR pixels of
    context on every side; only the tile's own part of each output is kept (no blending).

    Equals one pass over the whole image up to float rounding when ``overlap`` covers the network's
    receptive field in LR pixels (convolutional models: EDSR, CARN); global operations (RCAN's
    channel attention averages over the whole input) make tiles differ slightly whatever the overlap.
    Memory is bounded by one ``(tile + 2*overlap)``-sized pass.
    """
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile: expected an int >= 1 (LR pixels), got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f"overlap: expected an int >= 0 (LR pixels), got {overlap!r}")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale: expected an int >= 1, got {scale!r}")
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"x: expected a 4-D [B, 3, H, W] tensor, got {getattr(x, 'shape', type(x).__name__)}")
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return fn(x)
    out = None
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            bottom, right = min(top + tile, h), min(left + tile, w)
            t0, l0 = max(top - overlap, 0), max(left - overlap, 0)
            t1, l1 = min(bottom + overlap, h), min(right + overlap, w)
            y = fn(x[..., t0:t1, l0:l1])
            if y.shape[-2:] != ((t1 - t0) * scale, (l1 - l0) * scale):
                raise ValueError(
                    f"scale: fn turned a {t1 - t0}x{l1 - l0} tile into {tuple(y.shape[-2:])}, "
                    f"not {scale}x larger; pass the model's scale"
                )
            if out is None:
                out = y.new_empty(*x.shape[:-3], y.shape[-3], h * scale, w * scale)
            out[..., top * scale:bottom * scale, left * scale:right * scale] = y[
                ..., (top - t0) * scale:(bottom - t0) * scale, (left - l0) * scale:(right - l0) * scale
            ]
    return out


@torch.no_grad()
def upscale_tensor(fn: SRFn, x: Tensor, scale: int, tile: int | None = None, overlap: int = 16,
                   ensemble: bool = False) -> Tensor:
    """``fn(x)`` with optional tiling and self-ensemble, without gradients; output clamped to [0, 1]."""
    run = fn if tile is None else (lambda y: tiled_forward(fn, y, tile, overlap, scale))
    out = self_ensemble(run, x) if ensemble else run(x)
    return out.clamp_(0, 1)
