"""Eager reference of the contrastive L1-ratio loss: the spec the native op is tested against.

For one VGG tap with anchor ``a`` (student features), positive ``p`` (teacher features) and
K negatives ``n_k``::

    CL = d(a, p) / (sum_k d(a, n_k) + eps),    d = mean absolute difference

``reduction="batch"`` is the official CSD code: each ``d`` is one mean over the whole batch.
``reduction="sample"`` is the paper's Eq. 2: one ratio per sample (each ``d`` a mean over
that sample's elements), averaged over the batch (the paper writes a sum over i; we divide
by B, as its L1 terms are divided in practice, so lambda_C keeps its meaning).

Negatives are ``[K, B, ...]`` (one per anchor) or ``[K, ...]`` (shared by the whole batch,
broadcast; never materialized K*B times).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

REDUCTIONS = ("batch", "sample")


def negatives_are_shared(anchor: Tensor, negatives: Tensor) -> bool:
    """True for ``[K, ...]`` negatives shared over the batch, False for ``[K, B, ...]``."""
    if negatives.dim() == anchor.dim():
        return True
    if negatives.dim() == anchor.dim() + 1:
        return False
    raise ValueError(
        f"negatives: expected [K, *anchor.shape] = [K, {', '.join(map(str, anchor.shape))}] or "
        f"[K, *anchor.shape[1:]], got shape {tuple(negatives.shape)}"
    )


def contrastive_ratio_reference(
    anchor: Tensor, positive: Tensor, negatives: Tensor, reduction: str = "batch", eps: float = 1e-7
) -> Tensor:
    """One tap's CL (see module docstring), computed the obvious way in fp32."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    if anchor.dim() < 2:
        raise ValueError(f"anchor: expected a [B, C, ...] tensor of at least 2 dims, got shape {tuple(anchor.shape)}")
    a, p = anchor.float(), positive.float()
    shared = negatives_are_shared(anchor, negatives)
    n = negatives.float().unsqueeze(1) if shared else negatives.float()  # [K, B or 1, ...]
    dims = tuple(range(1, a.dim()))
    num = (a - p).abs().mean(dims)  # [B]
    den = torch.stack([(a - n_k).abs().mean(dims) for n_k in n]).sum(0)  # [B]
    if reduction == "batch":
        return num.mean() / (den.mean() + eps)
    return (num / (den + eps)).mean()


def check_tap_counts(anchors, positives, negatives, weights) -> None:
    """One anchor, positive, negatives tensor and weight per tap, at least one tap."""
    if not (len(anchors) == len(positives) == len(negatives) == len(weights) > 0):
        raise ValueError(
            "anchors, positives, negatives, weights: expected equal non-zero lengths, got "
            f"{len(anchors)}, {len(positives)}, {len(negatives)}, {len(weights)}"
        )


def multi_tap_contrastive_reference(
    anchors: Sequence[Tensor],
    positives: Sequence[Tensor],
    negatives: Sequence[Tensor],
    weights: Sequence[float],
    reduction: str = "batch",
    eps: float = 1e-7,
) -> Tensor:
    """sum_j weights[j] * CL_j over the VGG taps j."""
    check_tap_counts(anchors, positives, negatives, weights)
    return sum(
        w * contrastive_ratio_reference(a, p, n, reduction, eps)
        for a, p, n, w in zip(anchors, positives, negatives, weights)
    )
