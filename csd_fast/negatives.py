"""How negatives are made for the contrastive loss (CSD paper Sec. 3.2, official code).

A ``Negatives`` holds the distinct negative images once, plus an optional ``index [K, B]``
saying which image is negative k of anchor b; without an index all K images are shared by the
whole batch. Features are computed once per distinct image and gathered per anchor only when
an index asks for it.

Kinds (``make_negatives(kind, lr, k, scale)``):
- ``"official"``: the batch's first K LR images in random order (the official code's
  ``lr[torch.randperm(neg_num)]``), bicubic-upsampled, the same K for every anchor (the first K
  anchors meet their own image among them; batches come in random order, so over a run they are
  K random images of the batch).
- ``"others"``: per anchor, K other images of the batch (never its own), bicubic-upsampled.
- ``"self-blur"``: each anchor's own bicubic upsample (K = 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .data.imresize import bicubic_upsample

KINDS = ("official", "others", "self-blur")


@dataclass
class Negatives:
    images: Tensor  # [M, 3, H, W] distinct negative images
    index: Tensor | None = None  # [K, B] long into images; None: the M images are shared by the batch

    @property
    def k(self) -> int:
        return self.images.shape[0] if self.index is None else self.index.shape[0]

    def gather(self, feats: Tensor) -> Tensor:
        """Per-image features [M, ...] -> [K, ...] (shared) or [K, B, ...] (per anchor)."""
        return feats if self.index is None else feats[self.index]


def _check_k(kind: str, k: int, available: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"neg_num: expected an int >= 1, got {k!r}")
    if k > available:
        raise ValueError(
            f"neg_num: {kind!r} negatives draw K = {k} images from the batch, but only {available} are "
            f"available; expected neg_num <= {available} (raise the batch size or lower neg_num)"
        )


@torch.no_grad()
def make_negatives(kind: str, lr: Tensor, k: int, scale: int, generator: torch.Generator | None = None) -> Negatives:
    """Negatives for the anchors of the LR batch ``lr`` [B,3,h,w] (see module docstring)."""
    b = lr.shape[0]
    if kind == "official":
        _check_k(kind, k, b)
        perm = torch.randperm(k, generator=generator).to(lr.device)
        return Negatives(bicubic_upsample(lr[perm], scale))
    if kind == "others":
        _check_k(kind, k, b - 1)
        # For anchor j, a random permutation of the other B-1 indices, cut to K.
        keys = torch.rand(b, b, generator=generator)
        keys.fill_diagonal_(float("inf"))
        index = keys.argsort(dim=1)[:, :k].t().contiguous()  # [K, B]
        return Negatives(bicubic_upsample(lr, scale), index.to(lr.device))
    if kind == "self-blur":
        if k != 1:
            raise ValueError(f"neg_num: 'self-blur' negatives have exactly K = 1 per anchor, got {k}")
        return Negatives(bicubic_upsample(lr, scale), torch.arange(b, device=lr.device).unsqueeze(0))
    raise ValueError(f"negatives: expected one of {KINDS}, got {kind!r}")
