"""KDTrainer: distil a frozen pretrained teacher of any architecture into a student (DCKD paper Eq. 10).

    L = L1(S, HR) + lambda_kd * L1(S, T) + lambda_c * CL(S, T, negatives) + lambda_ce * CE_DMM(S, T)

The teacher is any module ``teacher(lr) -> sr`` at the student's scale: frozen
(``requires_grad=False``), kept in eval mode, run under ``no_grad``, absent from the optimizer
and from checkpoints. The student is a csd_fast slim model trained at ``width`` (default 1.0:
the whole model). CL is the contrastive loss of ``CSDTrainer`` over any feature encoder (VGG19
taps by default; DCKD uses a VQGAN encoder) with any negatives kind, "dynamic" by default.
CE_DMM is DCKD's distribution mapping module (``DMMLoss``), on when a codebook is given.
As in ``CSDTrainer`` the L1 terms are in ``pixel_range`` units, so DCKD's weights for [0, 1]
images (lambda_dcl 0.1, lambda_ce 0.001) default to ``0.1 * pixel_range`` and
``0.001 * pixel_range``. ``KDTrainer`` is ``CSDTrainer``'s loop (schedule, checkpoints, logs, DDP)
with this objective (``DistillObjective``) in place of CSD's.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .losses import ContrastiveLoss
from .models import SlimSRModel
from .objective import CSDObjective
from .trainer import CSDTrainer

DCKD_LAMBDA_CE = 0.001


class DistillForward(nn.Module):
    """``(lr, width) -> (teacher(lr) under no_grad, student(lr, width))``; the teacher stays in eval mode."""

    def __init__(self, teacher: nn.Module, student: SlimSRModel):
        super().__init__()
        self.teacher, self.student = teacher, student

    def forward(self, lr: Tensor, width: float) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            teacher = self.teacher(lr)
        return teacher, self.student(lr, width)

    def train(self, mode: bool = True) -> "DistillForward":
        super().train(mode)
        self.teacher.eval()
        return self


class DMMLoss(nn.Module):
    """DCKD's distribution mapping module (Eq. 8-9) with a user-supplied codebook ``e`` [M, D].

    For every pixel p of the encoder features F [B, D, h, w]:
    target ``y_p = argmin_m ||F^T_p - e_m||^2`` (the teacher's nearest code),
    logits ``z_p = -||F^S_p - e_m||^2``, and ``CE = mean_p -log softmax(z_p)[y_p]``
    (as the official code: hard teacher codes, ``F.cross_entropy`` on the student's distances).
    """

    def __init__(self, codebook: Tensor):
        super().__init__()
        if not isinstance(codebook, Tensor) or codebook.dim() != 2 or not codebook.is_floating_point():
            got = tuple(codebook.shape) if isinstance(codebook, Tensor) else type(codebook).__name__
            raise ValueError(f"codebook: expected a floating [n_codes, dim] tensor, got {got}")
        self.register_buffer("codebook", codebook.detach().clone())

    def _sq_distances(self, feats: Tensor) -> Tensor:
        """[B, D, h, w] -> [B*h*w, M] squared distances to the codes (fp32)."""
        d = self.codebook.shape[1]
        if feats.dim() != 4 or feats.shape[1] != d:
            raise ValueError(
                f"encoder: its last feature map must be [B, {d}, h, w] to match the codebook [n_codes, {d}], "
                f"got shape {tuple(feats.shape)}"
            )
        f = feats.permute(0, 2, 3, 1).reshape(-1, d).float()
        e = self.codebook.float()
        return f.pow(2).sum(1, keepdim=True) - 2 * f @ e.t() + e.pow(2).sum(1)

    def forward(self, feats_student: Tensor, feats_teacher: Tensor) -> Tensor:
        with torch.no_grad():
            target = self._sq_distances(feats_teacher).argmin(1)
        return F.cross_entropy(-self._sq_distances(feats_student), target)


class KDTrainer(CSDTrainer):
    """Train ``student`` at ``width`` from the frozen ``teacher`` (see module docstring).

    ``encoder``: a module mapping [B,3,H,W] in [0,1] to a list of feature maps, with
    ``encoder_weights`` (one per map) — in place of VGG19 (then ``vgg_weights`` is unused).
    ``codebook``: [n_codes, dim] tensor enabling the DMM term on the encoder's last feature map
    (its channels must be ``dim``). Other arguments as ``CSDTrainer`` (its options, e.g.
    ``vgg_input``; ``lambda_t`` is not used: the frozen teacher has no loss of its own).
    """

    log_fields = ("step", "lr", "loss", "l1_student", "l1_kd", "contrastive", "dmm", "psnr_teacher", "psnr_student")

    def __init__(
        self,
        teacher: nn.Module,
        student: SlimSRModel,
        width: float = 1.0,
        negatives: str = "dynamic",
        lambda_kd: float = 1.0,
        lambda_c: float | None = None,
        lambda_ce: float | None = None,
        codebook: Tensor | None = None,
        encoder: nn.Module | None = None,
        encoder_weights: Sequence[float] | None = None,
        reduction: str = "batch",
        pixel_range: float = 255.0,
        **kwargs,
    ):
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher: expected an nn.Module mapping lr -> sr, got {type(teacher).__name__}")
        if teacher is student:
            raise ValueError("teacher: expected a separate model from the student (for one shared model use CSDTrainer)")
        if (encoder is None) != (encoder_weights is None):
            raise ValueError(
                "encoder, encoder_weights: expected both (a custom encoder and one weight per feature map) or "
                f"neither, got encoder={type(encoder).__name__}, encoder_weights={encoder_weights!r}"
            )
        lambda_ce = (DCKD_LAMBDA_CE * pixel_range if codebook is not None else 0.0) if lambda_ce is None else lambda_ce
        for name, value in (("lambda_kd", lambda_kd), ("lambda_ce", lambda_ce)):
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        if lambda_ce > 0 and codebook is None:
            raise ValueError(f"codebook: lambda_ce = {lambda_ce} needs a [n_codes, dim] codebook, got None")
        self.teacher = teacher.requires_grad_(False).eval()
        self.lambda_kd, self.lambda_ce = float(lambda_kd), float(lambda_ce)
        self.codebook = codebook
        if encoder is not None:
            kwargs["contrastive"] = ContrastiveLoss(encoder=encoder.eval(), weights=encoder_weights, reduction=reduction)
        super().__init__(
            student, width=width, negatives=negatives, lambda_t=0.0, lambda_c=lambda_c,
            reduction=reduction, pixel_range=pixel_range, **kwargs,
        )
        self.dmm = self.objective.dmm

    def _make_objective(self) -> "DistillObjective":
        o = self.options
        dmm = DMMLoss(self.codebook).to(self.device) if self.codebook is not None else None
        return DistillObjective(self.teacher.to(self.device), self.model, self.width, o.negatives, o.neg_num,
                                self.lambda_kd, o.lambda_c, self.lambda_ce, o.pixel_range, self.contrastive,
                                self.dynamic, dmm)

    def _val_outputs(self, lr: Tensor) -> dict[str, Tensor]:
        return {"psnr_teacher": self.teacher(lr), "psnr_student": self.model(lr, self.width)}


class DistillObjective(CSDObjective):
    """Eq. 10 on one batch (module docstring): ``objective(lr, hr, generator) -> (loss, terms)``."""

    def __init__(self, teacher: nn.Module, student: SlimSRModel, width: float, negatives: str, neg_num: int,
                 lambda_kd: float, lambda_c: float, lambda_ce: float, pixel_range: float,
                 contrastive: ContrastiveLoss, dynamic=None, dmm: DMMLoss | None = None):
        super().__init__(student, width, negatives, neg_num, 0.0, lambda_c, pixel_range, contrastive, dynamic)
        self.lambda_kd, self.lambda_ce, self.dmm = lambda_kd, lambda_ce, dmm
        self.net = DistillForward(teacher, student)

    def __call__(self, lr: Tensor, hr: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
        teacher, student = self.net(lr, self.width)
        if teacher.shape != student.shape:
            raise ValueError(
                f"teacher: its output {tuple(teacher.shape)} does not match the student's {tuple(student.shape)}; "
                "expected a teacher at the student's scale"
            )
        l1_s = F.l1_loss(student, hr) * self.pixel_range
        l1_kd = F.l1_loss(student, teacher) * self.pixel_range
        loss = l1_s + self.lambda_kd * l1_kd
        terms = {"l1_student": l1_s, "l1_kd": l1_kd}
        if self.lambda_c > 0 or self.lambda_ce > 0:
            encode = self.contrastive.encode  # one encoder pass per image serves CL and DMM
            feats_s = encode(student)
            with torch.no_grad():
                feats_t = encode(teacher)
            if self.lambda_c > 0:
                neg = self.make_negatives(lr, generator)
                with torch.no_grad():
                    feats_n = [neg.gather(f) for f in encode(neg.images)]
                cl = self.contrastive.combine(feats_s, feats_t, feats_n)
                loss = loss + self.lambda_c * cl
                terms["contrastive"] = cl
            if self.lambda_ce > 0:
                ce = self.dmm(feats_s[-1], feats_t[-1])
                loss = loss + self.lambda_ce * ce
                terms["dmm"] = ce
        terms["loss"] = loss
        return loss, terms
