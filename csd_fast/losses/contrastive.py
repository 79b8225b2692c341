"""The CSD contrastive loss over VGG19 features (CSD paper Eq. 2, official weights/taps).

    CL = sum_j w_j * d(phi_j(S), phi_j(T)) / (sum_k d(phi_j(S), phi_j(N_k)) + eps)

The teacher output T is detached inside CL: the teacher gets gradient only from its own L1
term (the paper's CSD-B ablation shows that letting CL pull on it weakens the teacher).
Negatives are detached and shared, so their features are computed once per distinct image
under ``no_grad``; with an index they are gathered per anchor (see ``Negatives``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .. import ops
from ..negatives import Negatives
from .reference import multi_tap_contrastive_reference
from .vgg import TAP_WEIGHTS, VGG19Taps


class ContrastiveLoss(nn.Module):
    """``loss(student, teacher, negatives)`` -> fp32 scalar.

    ``encoder`` is any module mapping [B,3,H,W] in [0,1] to a list of feature maps (default: the
    VGG19 taps, from ``vgg_weights``, fed as ``vgg_input`` says: "official" 8-bit RGB or
    "imagenet"-normalized, see ``csd_fast.losses.vgg``); ``weights`` has one weight per feature map.
    ``backend``: "auto" (the native op when built), or "eager" (the reference formula).
    """

    def __init__(
        self,
        encoder: nn.Module | None = None,
        weights: Sequence[float] = TAP_WEIGHTS,
        reduction: str = "batch",
        eps: float = 1e-7,
        vgg_weights: str | None = None,
        backend: str = "auto",
        vgg_input: str = "official",
    ):
        super().__init__()
        if backend not in ("auto", "eager"):
            raise ValueError(f"backend: expected 'auto' or 'eager', got {backend!r}")
        self.encoder = encoder if encoder is not None else VGG19Taps(vgg_weights, vgg_input=vgg_input)
        self.encoder.requires_grad_(False).eval()
        self.weights = tuple(float(w) for w in weights)
        self.reduction, self.eps, self.backend = reduction, eps, backend
        self._combine = ops.multi_tap_contrastive if backend == "auto" else multi_tap_contrastive_reference

    def forward(self, student: Tensor, teacher: Tensor, negatives: Negatives) -> Tensor:
        feats_s = self.encode(student)
        with torch.no_grad():
            feats_t = self.encode(teacher.detach())
            feats_n = [negatives.gather(f) for f in self.encode(negatives.images)]
        return self.combine(feats_s, feats_t, feats_n)

    def combine(self, feats_s, feats_t, feats_n) -> Tensor:
        """sum_j w_j CL_j on precomputed features (the op, or the reference with ``backend="eager"``)."""
        return self._combine(feats_s, feats_t, feats_n, self.weights, reduction=self.reduction, eps=self.eps)

    def train(self, mode: bool = True):
        """The encoder is frozen: it stays in eval mode (no BatchNorm/Dropout updates) whatever ``mode``."""
        super().train(mode)
        self.encoder.eval()
        return self

    def encode(self, x: Tensor) -> list[Tensor]:
        """The encoder's feature maps, one per weight."""
        feats = list(self.encoder(x))
        if len(feats) != len(self.weights):
            raise ValueError(
                f"encoder: returned {len(feats)} feature maps, expected one per weight ({len(self.weights)})"
            )
        return feats
