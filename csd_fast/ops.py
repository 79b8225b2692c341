"""Contrastive L1-ratio loss, one VGG tap or all five, on the native op when it is built.

For one tap with anchor ``a`` (student), positive ``p`` (teacher) and K negatives ``n_k``::

    CL = d(a, p) / (sum_k d(a, n_k) + eps),    d = mean |.|

``reduction="batch"`` (official CSD) takes each ``d`` over the whole batch; ``"sample"``
(paper Eq. 2) takes one ratio per sample and averages the B ratios. Negatives are
``[K, B, ...]`` (one per anchor) or ``[K, ...]`` (shared by the batch, broadcast).
Negatives are constants: they never receive a gradient (the official code detaches them).

The native backend is the custom op ``torch.ops.csd_fast.contrastive_ratio`` from
``csd_fast._C`` (schema and CPU/CUDA kernels in ``csrc/``; its fake kernel and autograd are
registered here, so it works under ``torch.compile``). Its forward reads every input once
and returns the loss with the per-sample terms; its backward op writes grad_anchor and, only
when the positive requires grad, grad_positive. Without ``_C`` every call runs the eager
reference (``csd_fast.losses.reference``) and a warning at import says so.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import Tensor

from .losses.reference import (
    REDUCTIONS,
    contrastive_ratio_reference,
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
        loss, num, den = torch.ops.csd_fast.contrastive_ratio(
            anchor, positive, negatives.detach(), reduction, float(eps)
        )
        return _terms(loss, num, den, reduction) if return_terms else loss
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
    """``sum_j weights[j] * CL_j`` over the VGG taps j (fp32 scalar); one op call per tap."""
    if not (len(anchors) == len(positives) == len(negatives) == len(weights) > 0):
        raise ValueError(
            "anchors, positives, negatives, weights: expected equal non-zero lengths, got "
            f"{len(anchors)}, {len(positives)}, {len(negatives)}, {len(weights)}"
        )
    taps = zip(anchors, positives, negatives, weights)
    return sum(w * contrastive_ratio(a, p, n, reduction, eps) for a, p, n, w in taps)


def _fake_forward(anchor, positive, negatives, reduction, eps):
    torch._check(positive.shape == anchor.shape, lambda: f"positive: expected shape {anchor.shape}")
    torch._check(negatives.dim() in (anchor.dim(), anchor.dim() + 1), lambda: "negatives: expected [K, (B,) ...]")
    torch._check(negatives.shape[0] > 0, lambda: "negatives: expected K >= 1")
    acc = torch.float64 if anchor.dtype == torch.float64 else torch.float32
    batch, k = anchor.shape[0], negatives.shape[0]
    return (
        anchor.new_empty((), dtype=acc),
        anchor.new_empty((batch,), dtype=acc),
        anchor.new_empty((k, batch), dtype=acc),
    )


def _fake_backward(grad_loss, anchor, positive, negatives, num, den, reduction, eps, positive_grad):
    return torch.empty_like(anchor), torch.empty_like(positive) if positive_grad else positive.new_empty((0,))


def _setup_context(ctx, inputs, output):
    anchor, positive, negatives, reduction, eps = inputs
    _, num, den = output
    ctx.save_for_backward(anchor, positive, negatives, num, den)
    ctx.reduction, ctx.eps = reduction, eps
    ctx.mark_non_differentiable(num, den)  # logging terms


def _backward(ctx, grad_loss, _grad_num, _grad_den):
    """Gradients for anchor and (if it requires grad) positive; negatives are constants."""
    anchor, positive, negatives, num, den = ctx.saved_tensors
    positive_grad = ctx.needs_input_grad[1]
    grad_anchor, grad_positive = torch.ops.csd_fast.contrastive_ratio_backward(
        grad_loss, anchor, positive, negatives, num, den, ctx.reduction, ctx.eps, positive_grad
    )
    return grad_anchor, grad_positive if positive_grad else None, None, None, None


if _C is not None:
    torch.library.register_fake("csd_fast::contrastive_ratio", _fake_forward)
    torch.library.register_fake("csd_fast::contrastive_ratio_backward", _fake_backward)
    torch.library.register_autograd("csd_fast::contrastive_ratio", _backward, setup_context=_setup_context)
