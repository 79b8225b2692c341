"""Contrastive L1-ratio loss, one VGG tap or all five, on the native op when it is built.

For one tap with anchor ``a`` (student), positive ``p`` (teacher) and K negatives ``n_k``::

    CL = d(a, p) / (sum_k d(a, n_k) + eps),    d = mean |.|

``reduction="batch"`` (official CSD) takes each ``d`` over the whole batch; ``"sample"``
(paper Eq. 2) takes one ratio per sample and averages the B ratios. Negatives are
``[K, B, ...]`` (one per anchor) or ``[K, ...]`` (shared by the batch, broadcast).
Negatives are constants: they never receive a gradient (the official code detaches them).

The native backend is the custom op ``torch.ops.csd_fast.contrastive_loss`` from
``csd_fast._C`` (schema and CPU/CUDA kernels in ``csrc/``; its fake kernel and autograd are
registered here, so it works under ``torch.compile``). One call takes all taps: its forward
reads every input once and returns the weighted loss with each tap's per-sample terms; its
backward op writes grad_anchors and, only when a positive requires grad, grad_positives.
Taps whose anchor, positive and negatives share one memory format (contiguous, or e.g. all
``channels_last`` VGG features) are read in place, in memory order, without a copy; the
gradients come back in the anchor's and positive's format (``empty_like``).
Without ``_C`` every call runs the eager reference (``csd_fast.losses.reference``) and a
warning at import says so.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import Tensor

from .losses.reference import (
    REDUCTIONS,
    check_tap_counts,
    contrastive_ratio_reference,
    multi_tap_contrastive_reference,
    negatives_are_shared,
)

_BUILD_HINT = "build it with `pip install --no-build-isolation -e .` from the repository root"

try:
    from . import _C  # noqa: F401  (registers torch.ops.csd_fast.*)
except ImportError as err:  # fall back loudly, never silently
    _C = None
    warnings.warn(
        f"csd_fast._C could not be imported ({err}); csd_fast.ops falls back to the 'eager' "
        f"backend (slower, more memory); {_BUILD_HINT}.",
        RuntimeWarning,
        stacklevel=2,
    )

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def backend() -> str:
    """``"native"`` when ``csd_fast._C`` is loaded, else ``"eager"``."""
    return "native" if _C is not None else "eager"


def check_inputs(anchor: Tensor, positive: Tensor, negatives: Tensor, reduction: str, eps: float) -> None:
    """Raise ValueError/TypeError naming the argument, what it got and what was expected."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps: expected a float > 0, got {eps!r}")
    for name, t in (("anchor", anchor), ("positive", positive), ("negatives", negatives)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name}: expected a floating dtype {FLOAT_DTYPES}, got {t.dtype}")
    if anchor.dim() < 2 or anchor.numel() == 0:
        raise ValueError(f"anchor: expected a non-empty [B, C, ...] tensor, got shape {tuple(anchor.shape)}")
    if positive.shape != anchor.shape:
        raise ValueError(f"positive: expected anchor's shape {tuple(anchor.shape)}, got {tuple(positive.shape)}")
    shared = negatives_are_shared(anchor, negatives)
    per_negative = anchor.shape[1:] if shared else anchor.shape
    if negatives.shape[1:] != per_negative:
        raise ValueError(
            f"negatives: expected [K, {', '.join(map(str, per_negative))}] "
            f"({'shared' if shared else 'per-sample'}), got {tuple(negatives.shape)}"
        )
    if negatives.shape[0] == 0:
        raise ValueError(f"negatives: expected K >= 1 negatives, got K = 0 (shape {tuple(negatives.shape)})")
    for name, t in (("positive", positive), ("negatives", negatives)):
        if t.device != anchor.device:
            raise ValueError(f"{name}: expected anchor's device {anchor.device}, got {t.device}")
        if t.dtype != anchor.dtype:
            raise TypeError(f"{name}: expected anchor's dtype {anchor.dtype}, got {t.dtype}")


def _eager_terms(anchor: Tensor, positive: Tensor, negatives: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample d(a, p) ``[B]`` and d(a, n_k) ``[K, B]`` in fp32, without gradient."""
    with torch.no_grad():
        batch, k = anchor.shape[0], negatives.shape[0]
        a = anchor.float().reshape(batch, -1)
        n = negatives.float().reshape(k, 1 if negatives_are_shared(anchor, negatives) else batch, -1)
        num = (a - positive.float().reshape(batch, -1)).abs().mean(1)
        den = torch.stack([(a - n_k).abs().mean(1) for n_k in n])
    return num, den


def contrastive_ratio(
    anchor: Tensor,
    positive: Tensor,
    negatives: Tensor,
    reduction: str = "batch",
    eps: float = 1e-7,
    return_terms: bool = False,
):
    """One tap's CL as an fp32 scalar; with ``return_terms`` also ``(num, dens)`` for logging.

    ``num`` is d(a, p) and ``dens[k]`` is d(a, n_k): a scalar and ``[K]`` for ``"batch"``,
    ``[B]`` and ``[K, B]`` for ``"sample"``. The terms are detached (no gradient).
    """
    check_inputs(anchor, positive, negatives, reduction, eps)
    if _C is not None:
        loss, nums, dens = torch.ops.csd_fast.contrastive_loss(
            [anchor], [positive], [negatives.detach()], [1.0], reduction, eps
        )
        return _terms(loss, nums[0], dens[0], reduction) if return_terms else loss
    loss = contrastive_ratio_reference(anchor, positive, negatives, reduction, eps)
    if not return_terms:
        return loss
    num, den = _eager_terms(anchor, positive, negatives)
    return _terms(loss, num, den, reduction)


def _terms(loss: Tensor, num: Tensor, den: Tensor, reduction: str) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample terms ``[B]``, ``[K, B]`` -> the ``return_terms`` layout of ``reduction``."""
    if reduction == "batch":
        num, den = num.mean(), den.mean(1)
    return loss, num, den


def multi_tap_contrastive(
    anchors: Sequence[Tensor],
    positives: Sequence[Tensor],
    negatives: Sequence[Tensor],
    weights: Sequence[float],
    reduction: str = "batch",
    eps: float = 1e-7,
) -> Tensor:
    """``sum_j weights[j] * CL_j`` over the VGG taps j (fp32 scalar), in one op call."""
    check_tap_counts(anchors, positives, negatives, weights)
    for j, (a, p, n) in enumerate(zip(anchors, positives, negatives)):
        check_inputs(a, p, n, reduction, eps)
        if a.dtype != anchors[0].dtype or a.device != anchors[0].device:
            raise ValueError(
                f"anchors[{j}]: expected the dtype and device of anchors[0] ({anchors[0].dtype}, "
                f"{anchors[0].device}), got ({a.dtype}, {a.device})"
            )
    if _C is None:
        return multi_tap_contrastive_reference(anchors, positives, negatives, weights, reduction, eps)
    negatives, weights = [n.detach() for n in negatives], [float(w) for w in weights]
    loss, _, _ = torch.ops.csd_fast.contrastive_loss(list(anchors), list(positives), negatives, weights, reduction, eps)
    return loss


def _fake_forward(anchors, positives, negatives, weights, reduction, eps):
    acc = torch.float64 if anchors[0].dtype == torch.float64 else torch.float32
    nums, dens = [], []
    for a, p, n in zip(anchors, positives, negatives):
        torch._check(p.shape == a.shape, lambda: f"positive: expected shape {a.shape}")
        torch._check(n.dim() in (a.dim(), a.dim() + 1), lambda: "negatives: expected [K, (B,) ...]")
        torch._check(n.shape[0] > 0, lambda: "negatives: expected K >= 1")
        nums.append(a.new_empty((a.shape[0],), dtype=acc))
        dens.append(a.new_empty((n.shape[0], a.shape[0]), dtype=acc))
    return anchors[0].new_empty((), dtype=acc), nums, dens


def _fake_backward(grad_loss, anchors, positives, negatives, nums, dens, weights, reduction, eps, positive_grad):
    grad_positives = [torch.empty_like(p) if positive_grad else p.new_empty((0,)) for p in positives]
    return [torch.empty_like(a) for a in anchors], grad_positives


def _setup_context(ctx, inputs, output):
    anchors, positives, negatives, weights, reduction, eps = inputs
    _, nums, dens = output
    ctx.taps = len(anchors)
    ctx.save_for_backward(*anchors, *positives, *negatives, *nums, *dens)
    ctx.weights, ctx.reduction, ctx.eps = weights, reduction, eps
    ctx.mark_non_differentiable(*nums, *dens)  # logging terms


def _backward(ctx, grad_loss, _grad_nums, _grad_dens):
    """Gradients for the anchors and (if one requires grad) the positives; negatives are constants."""
    saved, t = ctx.saved_tensors, ctx.taps
    anchors, positives, negatives, nums, dens = (list(saved[i * t : (i + 1) * t]) for i in range(5))
    positive_grad = any(ctx.needs_input_grad[1])
    grad_anchors, grad_positives = torch.ops.csd_fast.contrastive_loss_backward(
        grad_loss, anchors, positives, negatives, nums, dens, ctx.weights, ctx.reduction, ctx.eps, positive_grad
    )
    no_grads = [None] * ctx.taps
    return grad_anchors, grad_positives if positive_grad else no_grads, no_grads, None, None, None


if _C is not None:
    torch.library.register_fake("csd_fast::contrastive_loss", _fake_forward)
    torch.library.register_fake("csd_fast::contrastive_loss_backward", _fake_backward)
    torch.library.register_autograd("csd_fast::contrastive_loss", _backward, setup_context=_setup_context)
