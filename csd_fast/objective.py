"""The CSD objective on one batch (CSD paper Sec. 3, as the official code computes it).

One shared model; the teacher ``T = model(lr, 1.0)`` and the student ``S = model(lr, width)``::

    L = L1(S, HR) + lambda_t * L1(T, HR) + lambda_c * CL(S, T.detach(), negatives)

The L1 terms are on the ``pixel_range`` scale (255: the official code trains on [0, 255] images,
the balance lambda_c = 200 was tuned for; CL is a ratio). Images in the API stay in [0, 1].

Under DDP (``group`` set) rank r holds the global batch positions r, r + world, ... (as
``csd_fast.data.loader`` shares it). The LR shards are gathered into the global batch, in position
order, so the negatives are drawn from it (one generator, seeded by the step, on every rank), and ``reduction="batch"`` divides global sums: each tap's numerator and denominator
are summed over the ranks with a differentiable all-reduce, so after DDP averages the gradients
they equal one process on the global batch (the official DataParallel loss).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .losses import ContrastiveLoss
from .models import SlimSRModel
from .negatives import Negatives, make_negatives


class JointForward(nn.Module):
    """``(lr, width) -> (teacher_out, student_out)`` in one forward, so DDP sees one call per step."""

    def __init__(self, model: SlimSRModel):
        super().__init__()
        self.model = model

    def forward(self, lr: Tensor, width: float) -> tuple[Tensor, Tensor]:
        return self.model(lr, 1.0), self.model(lr, width)


class CSDObjective:
    """``objective(lr, hr, generator) -> (loss, terms)`` (module docstring).

    ``net`` is the module run on the batch (``JointForward``; the trainer may wrap it in DDP);
    ``dynamic``: a ``DynamicNegatives`` for negatives="dynamic", else None.
    """

    def __init__(self, model: SlimSRModel, width: float, negatives: str, neg_num: int, lambda_t: float,
                 lambda_c: float, pixel_range: float, contrastive: ContrastiveLoss, dynamic=None):
        self.model, self.width = model, width
        self.negatives, self.neg_num, self.dynamic = negatives, neg_num, dynamic
        self.lambda_t, self.lambda_c, self.pixel_range = lambda_t, lambda_c, pixel_range
        self.contrastive = contrastive
        self.net: nn.Module = JointForward(model)
        self.group = None  # a torch.distributed group when training under DDP

    def __call__(self, lr: Tensor, hr: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
        teacher, student = self.net(lr, self.width)
        l1_s = F.l1_loss(student, hr) * self.pixel_range
        l1_t = F.l1_loss(teacher, hr) * self.pixel_range
        loss = l1_s + self.lambda_t * l1_t
        terms = {"l1_student": l1_s, "l1_teacher": l1_t}
        if self.lambda_c > 0:
            cl = self.contrastive_term(student, teacher.detach(), self.make_negatives(lr, generator))
            loss = loss + self.lambda_c * cl
            terms["contrastive"] = cl
        terms["loss"] = loss
        return loss, terms

    def make_negatives(self, lr: Tensor, generator: torch.Generator | None = None) -> Negatives:
        """This step's negatives for the anchors of ``lr`` (this rank's shard under DDP)."""
        if self.dynamic is not None:
            return self.dynamic(lr)
        if self.group is None:
            return make_negatives(self.negatives, lr, self.neg_num, self.model.scale, generator)
        shards = gather_shards(lr, self.group)  # rank r's i-th image is global position i * world + r
        world, rank = len(shards), torch.distributed.get_rank(self.group)
        global_batch = torch.stack(shards, dim=1).flatten(0, 1)
        neg = make_negatives(self.negatives, global_batch, self.neg_num, self.model.scale, generator)
        if neg.index is None:
            return neg
        return Negatives(neg.images, neg.index[:, rank::world])

    def contrastive_term(self, student: Tensor, teacher: Tensor, neg: Negatives) -> Tensor:
        """CL(S, T, N); over the global batch under DDP with ``reduction="batch"``."""
        if self.group is None or self.contrastive.reduction != "batch":
            return self.contrastive(student, teacher, neg)
        feats_s = self.contrastive.encode(student)
        with torch.no_grad():
            feats_t = self.contrastive.encode(teacher)
            feats_n = [neg.gather(f) for f in self.contrastive.encode(neg.images)]
        return global_batch_contrastive(feats_s, feats_t, feats_n, self.contrastive.weights,
                                        self.contrastive.eps, self.group)

    def log_values(self, terms: dict) -> dict[str, float]:
        """The terms as floats; under DDP the mean over the ranks (equal shards: the global batch's)."""
        keys = list(terms)
        values = torch.stack([terms[k].detach().double() for k in keys])
        if self.group is not None:
            torch.distributed.all_reduce(values, group=self.group)
            values /= torch.distributed.get_world_size(self.group)
        return dict(zip(keys, values.tolist()))


def gather_shards(x: Tensor, group) -> list[Tensor]:
    """Every rank's ``x`` (equal shapes), in rank order, without gradient."""
    shards = [torch.empty_like(x) for _ in range(torch.distributed.get_world_size(group))]
    torch.distributed.all_gather(shards, x.detach().contiguous(), group=group)
    return shards


def global_batch_contrastive(feats_s, feats_t, feats_n, weights, eps: float, group) -> Tensor:
    """``sum_j w_j (sum_b d(a, p) / B) / (sum_b sum_k d(a, n_k) / B + eps)`` with the sums and B over
    all ranks: per-sample d as ``csd_fast.losses.reference``, summed with a differentiable all-reduce."""
    from torch.distributed.nn.functional import all_reduce

    loss = 0.0
    for a, p, n, w in zip(feats_s, feats_t, feats_n, weights):
        b = a.shape[0]
        shared = n.dim() == a.dim()
        nk = n.unsqueeze(1) if shared else n  # [K, B or 1, ...]
        num = (a - p).abs().flatten(1).mean(1).sum()
        den = sum((a - n_k).abs().flatten(1).mean(1).sum() for n_k in nk)
        sums = all_reduce(torch.stack([num, den, a.new_tensor(float(b))]).float(), group=group)
        total = sums[2]
        loss = loss + w * (sums[0] / total) / (sums[1] / total + eps)
    return loss
