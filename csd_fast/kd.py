"""KDTrainer: distil a frozen pretrained teacher of any architecture into a student (DCKD paper Eq. 10).

    L = L1(S, HR) + lambda_kd * L1(S, T) + lambda_aug * L1(S, A^-1(T(A(LR))))
        + lambda_c * CL(S, T, negatives) + lambda_ce * CE_DMM(S, T)

The teacher is any module ``teacher(lr) -> sr`` at the student's scale: frozen
(``requires_grad=False``), kept in eval mode, run under ``no_grad``, absent from the optimizer
and from checkpoints. The student is a csd_fast slim model trained at ``width`` (default 1.0:
the whole model). CL is the contrastive loss of ``CSDTrainer`` over any feature encoder (VGG19
taps by default; DCKD uses a VQGAN encoder) with any negatives kind, "dynamic" by default.
The teacher-augmentation term (the official code's ``lcr_opt``, weight 1.0 in every official
config) compares the student's output with the teacher's output on an augmented LR batch ``A(LR)``
(per image, each with probability ``aug_prob`` = 0.5: colour inversion, flip of the rows, flip of
the columns, transpose; ``csd_fast.degradations.augment``), the augmentation undone on the output.
CE_DMM is DCKD's distribution mapping module (``DMMLoss``), on when a codebook is given.
As in ``CSDTrainer`` the L1 terms are in ``pixel_range`` units, so DCKD's weights for [0, 1]
images (lambda_dcl 0.1, lambda_ce 0.001) default to ``0.1 * pixel_range`` and
``0.001 * pixel_range``. Optimizer defaults are the official DCKD configs': Adam betas
(0.9, 0.99) and a constant rate (``lr_gamma=1.0``). ``KDTrainer`` is ``CSDTrainer``'s loop
(schedule, checkpoints, logs, DDP) with this objective (``DistillObjective``) in place of CSD's.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .degradations import augment, draw_augmentations, revert_augmentation
from .losses import ContrastiveLoss
from .models import SlimSRModel
from .objective import CSDObjective
from .options import TrainOptions
from .trainer import CSDTrainer

DCKD_LAMBDA_CE = 0.001
DMM_KINDS = ("official", "hard")


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

    For every pixel p of the encoder features F [B, D, h, w] (official code: the VQGAN encoder's
    output after its ``quant_conv``), ``d_p,m = ||F_p - e_m||^2``. ``kind``:

    - ``"official"`` (default, the official ``VectorQuantizerD`` + ``CELoss``): soft codes
      ``q_p = softmax_m(-d_p)`` for student and teacher, and ``CE = mean_p -sum_m q^T_p,m *
      log softmax(q^S_p)_m``; the official code hands the student's probabilities ``q^S`` to
      ``F.cross_entropy`` as logits, so a second softmax is applied to them, kept here as is;
    - ``"hard"`` (this package's earlier variant): the teacher's nearest code
      ``y_p = argmin_m d^T_p,m`` as the target and the student's ``-d^S_p`` as logits:
      ``CE = mean_p -log softmax(-d^S_p)[y_p]``.
    """

    def __init__(self, codebook: Tensor, kind: str = "official"):
        super().__init__()
        if not isinstance(codebook, Tensor) or codebook.dim() != 2 or not codebook.is_floating_point():
            got = tuple(codebook.shape) if isinstance(codebook, Tensor) else type(codebook).__name__
            raise ValueError(f"codebook: expected a floating [n_codes, dim] tensor, got {got}")
        if kind not in DMM_KINDS:
            raise ValueError(f"kind: expected one of {DMM_KINDS}, got {kind!r}")
        self.kind = kind
        self.register_buffer("codebook", codebook.detach().clone())

    def _sq_distances(self, feats: Tensor) -> Tensor:
        """[B, D, h, w] -> [B*h*w, M] squared distances to the codes (fp32)."""
        d = self.codebook.shape[1]
        if feats.dim() != 4 or feats.shape[1] != d:
            raise ValueError(
                f"DMM features (dmm_encoder's output, else the encoder's last feature map): expected [B, {d}, h, w] "
                f"to match the codebook [n_codes, {d}], got shape {tuple(feats.shape)}"
            )
        f = feats.permute(0, 2, 3, 1).reshape(-1, d).float()
        e = self.codebook.float()
        return f.pow(2).sum(1, keepdim=True) - 2 * f @ e.t() + e.pow(2).sum(1)

    def forward(self, feats_student: Tensor, feats_teacher: Tensor) -> Tensor:
        with torch.no_grad():
            d_teacher = self._sq_distances(feats_teacher)
        d_student = self._sq_distances(feats_student)
        if self.kind == "hard":
            return F.cross_entropy(-d_student, d_teacher.argmin(1))
        return F.cross_entropy(F.softmax(-d_student, 1), F.softmax(-d_teacher, 1))


def _refuse_options_overridden(options, arguments: dict) -> None:
    """``KDTrainer``'s own arguments win over an ``options`` object; refuse an ``options`` value they
    would silently replace (set there, i.e. not ``TrainOptions``' default; pass it as the keyword instead)."""
    if not isinstance(options, TrainOptions):
        return  # None, or a wrong type that CSDTrainer refuses by name
    default = TrainOptions()
    clash = [f"{k} (options: {getattr(options, k)!r}, argument: {v!r})" for k, v in arguments.items()
             if getattr(options, k) != getattr(default, k) and getattr(options, k) != v]
    if clash:
        raise ValueError(f"options: KDTrainer's arguments would override {', '.join(clash)}; "
                         "expected these as KDTrainer(..., name=value)")


class KDTrainer(CSDTrainer):
    """Train ``student`` at ``width`` from the frozen ``teacher`` (see module docstring).

    ``encoder``: a module mapping [B,3,H,W] in [0,1] to a list of feature maps, with
    ``encoder_weights`` (one per map) — in place of VGG19 (then ``vgg_weights`` is unused).
    ``codebook``: [n_codes, dim] tensor enabling the DMM term; ``dmm``: its formula, "official"
    (default) or "hard" (see ``DMMLoss``); ``dmm_encoder``: the module giving its [B, dim, h, w]
    features from [0, 1] images (official: a VQGAN encoder followed by its quant conv), else the
    encoder's last feature map (its channels must be ``dim``). ``lambda_aug`` / ``aug_prob``: the
    teacher-augmentation term (module docstring; needs square LR patches, 0 turns it off).
    Other arguments as ``CSDTrainer`` (its options, e.g. ``vgg_input``; ``lambda_t`` is not used: the frozen teacher has no loss of
    its own), with DCKD's optimizer defaults ``betas=(0.9, 0.99)`` and ``lr_gamma=1.0``.
    """

    log_fields = (
        "step", "lr", "loss", "l1_student", "l1_kd", "l1_aug", "contrastive", "dmm", "psnr_teacher", "psnr_student",
    )
    method = "dckd"

    def __init__(
        self,
        teacher: nn.Module,
        student: SlimSRModel,
        width: float = 1.0,
        negatives: str = "dynamic",
        lambda_kd: float = 1.0,
        lambda_aug: float = 1.0,
        aug_prob: float = 0.5,
        lambda_c: float | None = None,
        lambda_ce: float | None = None,
        codebook: Tensor | None = None,
        dmm: str = "official",
        dmm_encoder: nn.Module | None = None,
        encoder: nn.Module | None = None,
        encoder_weights: Sequence[float] | None = None,
        reduction: str = "batch",
        pixel_range: float = 255.0,
        betas: tuple[float, float] = (0.9, 0.99),
        lr_gamma: float = 1.0,
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
        _refuse_options_overridden(kwargs.get("options"), dict(
            width=width, negatives=negatives, lambda_kd=lambda_kd, lambda_aug=lambda_aug, aug_prob=aug_prob,
            lambda_c=lambda_c, reduction=reduction, pixel_range=pixel_range, betas=betas, lr_gamma=lr_gamma))
        lambda_ce = (DCKD_LAMBDA_CE * pixel_range if codebook is not None else 0.0) if lambda_ce is None else lambda_ce
        for name, value in (("lambda_kd", lambda_kd), ("lambda_aug", lambda_aug), ("lambda_ce", lambda_ce)):
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        if lambda_ce > 0 and codebook is None:
            raise ValueError(f"codebook: lambda_ce = {lambda_ce} needs a [n_codes, dim] codebook, got None")
        if not 0.0 <= aug_prob <= 1.0:
            raise ValueError(f"aug_prob: expected a probability in [0, 1], got {aug_prob!r}")
        self.teacher = teacher.requires_grad_(False).eval()
        self.lambda_kd, self.lambda_aug, self.lambda_ce = float(lambda_kd), float(lambda_aug), float(lambda_ce)
        self.aug_prob = float(aug_prob)
        self._dmm_args = (codebook, dmm, dmm_encoder)  # built by _make_objective, on the trainer's device
        if encoder is not None:
            kwargs["contrastive"] = ContrastiveLoss(encoder=encoder.eval(), weights=encoder_weights, reduction=reduction)
        super().__init__(
            student, width=width, negatives=negatives, lambda_t=0.0, lambda_c=lambda_c,
            reduction=reduction, pixel_range=pixel_range, betas=betas, lr_gamma=lr_gamma, method=self.method,
            lambda_kd=self.lambda_kd, lambda_aug=self.lambda_aug, aug_prob=self.aug_prob, **kwargs,
        )
        self.dmm, self.dmm_encoder = self.objective.dmm, self.objective.dmm_encoder

    def _make_objective(self) -> "DistillObjective":
        o = self.options
        codebook, kind, dmm_encoder = self._dmm_args
        return DistillObjective(
            self.teacher.to(self.device), self.model, self.width, negatives=o.negatives, neg_num=o.neg_num,
            lambda_kd=self.lambda_kd, lambda_aug=self.lambda_aug, aug_prob=self.aug_prob, lambda_c=o.lambda_c,
            lambda_ce=self.lambda_ce, pixel_range=o.pixel_range, contrastive=self.contrastive, dynamic=self.dynamic,
            dmm=DMMLoss(codebook, kind).to(self.device) if codebook is not None else None,
            dmm_encoder=None if dmm_encoder is None else dmm_encoder.requires_grad_(False).eval().to(self.device),
        )

    def teacher_on_augmented(self, lr: Tensor) -> Tensor:
        """See ``DistillObjective.teacher_on_augmented``."""
        return self.objective.teacher_on_augmented(lr)

    def _val_outputs(self, lr: Tensor) -> dict[str, Tensor]:
        return {"psnr_teacher": self.teacher(lr), "psnr_student": self.model(lr, self.width)}


class DistillObjective(CSDObjective):
    """Eq. 10 on one batch (module docstring): ``objective(lr, hr, generator) -> (loss, terms)``."""

    def __init__(self, teacher: nn.Module, student: SlimSRModel, width: float, *, negatives: str, neg_num: int,
                 lambda_kd: float, lambda_aug: float, aug_prob: float, lambda_c: float, lambda_ce: float,
                 pixel_range: float, contrastive: ContrastiveLoss, dynamic=None, dmm: DMMLoss | None = None,
                 dmm_encoder: nn.Module | None = None):
        super().__init__(student, width, negatives, neg_num, 0.0, lambda_c, pixel_range, contrastive, dynamic)
        self.lambda_kd, self.lambda_aug, self.aug_prob, self.lambda_ce = lambda_kd, lambda_aug, aug_prob, lambda_ce
        self.dmm, self.dmm_encoder = dmm, dmm_encoder
        self.teacher = teacher
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
        if self.lambda_aug > 0:
            l1_aug = F.l1_loss(student, self.teacher_on_augmented(lr)) * self.pixel_range
            loss = loss + self.lambda_aug * l1_aug
            terms["l1_aug"] = l1_aug
        feats_s = feats_t = None
        if self.lambda_c > 0 or (self.lambda_ce > 0 and self.dmm_encoder is None):
            encode = self.contrastive.encode  # one encoder pass per image serves CL and DMM
            feats_s = encode(student)
            with torch.no_grad():
                feats_t = encode(teacher)
        if self.lambda_c > 0:
            neg = self.make_negatives(lr, generator)
            with torch.no_grad():
                feats_n = [neg.gather(f) for f in self.contrastive.encode(neg.images)]
            cl = self.contrastive.combine(feats_s, feats_t, feats_n)
            loss = loss + self.lambda_c * cl
            terms["contrastive"] = cl
        if self.lambda_ce > 0:
            if self.dmm_encoder is None:
                ce = self.dmm(feats_s[-1], feats_t[-1])
            else:
                with torch.no_grad():
                    dmm_t = self.dmm_encoder(teacher)
                ce = self.dmm(self.dmm_encoder(student), dmm_t)
            loss = loss + self.lambda_ce * ce
            terms["dmm"] = ce
        terms["loss"] = loss
        return loss, terms

    @torch.no_grad()
    def teacher_on_augmented(self, lr: Tensor) -> Tensor:
        """``A^-1(T(A(lr)))`` with fresh augmentations ``A`` (``aug_prob`` per image and kind)."""
        ops = draw_augmentations(lr.shape[0], self.aug_prob, device=lr.device)
        return revert_augmentation(self.teacher(augment(lr, ops)), ops)
