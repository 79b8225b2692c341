"""CSDTrainer: joint training of a teacher and its channel-splitting student (CSD paper Sec. 3).

One shared model; each step runs the teacher ``T = model(lr, 1.0)`` and the student
``S = model(lr, width)`` and minimizes

    L = L1(S, HR) + lambda_t * L1(T, HR) + lambda_c * CL(S, T.detach(), negatives)

The L1 terms are measured in 8-bit units (``pixel_range=255``), as the official code trains on
[0, 255] images: that is the balance lambda_c = 200 was tuned for (CL is a ratio, unchanged by
the pixel range). Images in the API stay in [0, 1]. Optimized with Adam (lr 1e-4, betas 0.9/0.999, eps 1e-8) and a step decay (x0.5). Every step is
seeded from ``(seed, step)`` and batches come from ``csd_fast.data.loader.batches`` (epochs
without replacement, items seeded by their position in the run), so a run resumed from a
checkpoint draws the same batches and negatives as an uninterrupted one.
"""
from __future__ import annotations

import csv
import math
import os
import time
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .checkpoint import atomic_save, load_checkpoint
from .data import loader
from .fileio import atomic_write, lock_run_dir
from .history import DynamicNegatives
from .losses import ContrastiveLoss
from .metrics import psnr_y
from .models import SlimSRModel, check_lr_input, check_width
from .negatives import Negatives, make_negatives

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"


class JointForward(nn.Module):
    """``(lr, width) -> (teacher_out, student_out)`` in one forward, so DDP sees one call per step."""

    def __init__(self, model: SlimSRModel):
        super().__init__()
        self.model = model

    def forward(self, lr: Tensor, width: float) -> tuple[Tensor, Tensor]:
        return self.model(lr, 1.0), self.model(lr, width)


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63 - 1)


def _as_batch(x: Tensor) -> Tensor:
    return x.unsqueeze(0) if x.dim() == 3 else x


class CSDTrainer:
    """Train ``model`` (teacher at width 1.0) and its student at ``width`` with CSD.

    ``negatives``: "official" (default), "others" or "self-blur" (see ``csd_fast.negatives``), or
    "dynamic" (DCKD: ``csd_fast.history.DynamicNegatives`` with ``neg_num`` negatives, default 5,
    further options in ``dynamic_options``; its history model is checkpointed).
    ``neg_num`` / ``lambda_c`` default to 10 / 200 (CSD), or 5 / 0.1 * ``pixel_range`` for
    "dynamic" (DCKD's lambda_dcl = 0.1 is for L1 on [0, 1] images).
    ``reduction``: "batch" (official) or "sample" (paper Eq. 2). ``contrastive``: a ready
    ``ContrastiveLoss`` (else one is built from ``vgg_weights`` and ``reduction``).
    ``pixel_range``: the L1 terms are multiplied by it (see module docstring).
    ``out_dir``: where ``checkpoint.pt`` and ``log.csv`` go (None: nothing is written).
    """

    log_fields = ("step", "lr", "loss", "l1_student", "l1_teacher", "contrastive", "psnr_teacher", "psnr_student")

    def __init__(
        self,
        model: SlimSRModel,
        width: float = 0.25,
        neg_num: int | None = None,
        negatives: str = "official",
        lambda_t: float = 1.0,
        lambda_c: float | None = None,
        reduction: str = "batch",
        pixel_range: float = 255.0,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        lr_step: int | None = None,
        lr_gamma: float = 0.5,
        vgg_weights: str | None = None,
        contrastive: ContrastiveLoss | None = None,
        teacher_state_dict: dict | None = None,
        device: str | torch.device | None = None,
        out_dir: str | None = None,
        checkpoint_every: int = 500,
        val_every: int | None = None,
        seed: int = 0,
        progress: bool = True,
        dynamic_options: dict | None = None,
    ):
        if not isinstance(model, SlimSRModel):
            raise TypeError(f"model: expected a csd_fast slim model (SlimEDSR/SlimRCAN/SlimCARN), got {type(model).__name__}")
        self.width = check_width(width)
        model.num_params(self.width)  # refuses widths that leave 0 channels
        dynamic = negatives == "dynamic"
        neg_num = (5 if dynamic else 10) if neg_num is None else neg_num
        lambda_c = (0.1 * pixel_range if dynamic else 200.0) if lambda_c is None else lambda_c
        if isinstance(neg_num, bool) or not isinstance(neg_num, int) or neg_num < 1:
            raise ValueError(f"neg_num: expected an int >= 1, got {neg_num!r}")
        for name, value in (("lambda_t", lambda_t), ("lambda_c", lambda_c)):
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device)
        if teacher_state_dict is not None:
            self.model.load_state_dict(teacher_state_dict)
        self.neg_num, self.negatives = neg_num, negatives
        self.dynamic = None
        if dynamic:
            self.dynamic = DynamicNegatives(self.model, n=neg_num, width=self.width, **(dynamic_options or {}))
        self.total_steps: int | None = None
        self.lambda_t, self.lambda_c = float(lambda_t), float(lambda_c)
        self.pixel_range = float(pixel_range)
        self.contrastive = (contrastive or ContrastiveLoss(reduction=reduction, vgg_weights=vgg_weights)).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, betas=betas, eps=1e-8)
        self.base_lr, self.lr_step, self.lr_gamma = lr, lr_step, lr_gamma
        self.lr_step_size: int | None = None  # set by fit (lr_step, else half the run)
        self.out_dir, self.checkpoint_every, self.val_every = out_dir, checkpoint_every, val_every
        self.seed, self.progress = seed, progress
        self.step_count = 0
        self.history: list[dict] = []
        self.net: nn.Module = self._make_net()
        self.rank, self.world = 0, 1
        self._setup_distributed()

    # ----------------------------------------------------------------- distributed
    def _setup_distributed(self) -> None:
        """Under ``torchrun`` (an initialized process group), wrap the joint forward in DDP."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)

    def _make_net(self) -> nn.Module:
        """The module run on each batch (wrapped in DDP under torchrun); subclasses may replace it."""
        return JointForward(self.model)

    def _all_ranks_agree(self, flag: bool) -> bool:
        """``flag`` of any rank, on every rank (a rank leaving the loop alone would hang the others)."""
        if self.world == 1:
            return flag
        import torch.distributed as dist

        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ----------------------------------------------------------------- one step
    def compute_loss(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The CSD objective on one batch; returns the loss and its terms for logging."""
        teacher, student = self.net(lr, self.width)
        l1_s = F.l1_loss(student, hr) * self.pixel_range
        l1_t = F.l1_loss(teacher, hr) * self.pixel_range
        loss = l1_s + self.lambda_t * l1_t
        terms = {"l1_student": l1_s.item(), "l1_teacher": l1_t.item()}
        if self.lambda_c > 0:
            neg = self.make_negatives(lr)
            cl = self.contrastive(student, teacher.detach(), neg)
            loss = loss + self.lambda_c * cl
            terms["contrastive"] = cl.item()
        terms["loss"] = loss.item()
        return loss, terms

    def make_negatives(self, lr: Tensor) -> Negatives:
        """This step's negatives for the anchors of ``lr`` (the history model's for "dynamic")."""
        if self.dynamic is not None:
            return self.dynamic(lr)
        return make_negatives(self.negatives, lr, self.neg_num, self.model.scale)

    def train_step(self, lr: Tensor, hr: Tensor) -> dict[str, float]:
        """One optimizer step; stops with FloatingPointError (before any update) on a non-finite loss."""
        check_lr_input(lr, "lr")
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, terms = self.compute_loss(lr.to(self.device), hr.to(self.device))
        if self._all_ranks_agree(not torch.isfinite(loss).item()):  # every rank stops, none waits in backward
            where = f" on rank {self.rank} (non-finite on at least one rank)" if self.world > 1 else ""
            raise FloatingPointError(
                f"loss is {loss.item()}{where} at step {self.step_count + 1} (terms: {terms}); training stopped "
                "before updating the weights, and no checkpoint was written for this step. Check the "
                "batch for NaN/Inf pixels or lower the learning rate."
            )
        loss.backward()
        self._apply_lr()
        self.optimizer.step()
        self.step_count += 1
        if self.dynamic is not None:
            self.dynamic.update(self.model, self.step_count, self.total_steps)
        return terms

    def _apply_lr(self) -> None:
        """Step decay from the absolute step: ``base_lr * gamma ** (step // step_size)``.

        Derived from ``step_count`` rather than kept in a scheduler, so calling ``fit`` again or
        resuming never compounds or restarts the decay.
        """
        if self.lr_step_size is None:
            return
        lr = self.base_lr * self.lr_gamma ** (self.step_count // self.lr_step_size)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # ----------------------------------------------------------------- loop
    def fit(
        self,
        train_set,
        steps: int,
        val_set: Iterable | None = None,
        batch_size: int = 16,
        resume: bool = False,
        max_minutes: float | None = None,
        num_workers: int = 0,
    ) -> list[dict]:
        """Train until ``steps`` optimizer steps (or ``max_minutes``); returns the log history.

        ``train_set[i]`` gives ``(lr [3,h,w], hr [3,sh,sw])``. With ``resume=True`` and a checkpoint
        in ``out_dir``, training continues from its step. ``num_workers``: DataLoader worker
        processes reading ``train_set`` (0: this process); the batches do not depend on it.
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
        if batch_size % self.world:
            raise ValueError(f"batch_size: expected a multiple of the world size {self.world}, got {batch_size}")
        if len(train_set) == 0:
            raise ValueError("train_set: expected at least one training pair, got an empty dataset")
        self.total_steps = steps
        self.lr_step_size = self.lr_step or max(1, steps // 2)
        if resume:
            self.resume()
        batches = loader.batches(train_set, batch_size, self.seed, self.step_count, num_workers, self.world, self.rank)
        start = time.monotonic()
        val_every = self.val_every or max(1, steps // 4)
        with tqdm(total=steps, initial=self.step_count, disable=not (self.progress and self.is_main), desc="CSD") as bar:
            while self.step_count < steps:
                lr, hr = next(batches)
                torch.manual_seed(_step_seed(self.seed, self.step_count + 1))  # this step's negatives and noise
                terms = self.train_step(lr, hr)
                record = {"step": self.step_count, "lr": self.optimizer.param_groups[0]["lr"], **terms}
                if val_set is not None and (self.step_count % val_every == 0 or self.step_count == steps):
                    record.update(self.validate(val_set))
                self._log(record)
                bar.update(1)
                bar.set_postfix(loss=f"{terms['loss']:.4f}")
                out_of_time = max_minutes is not None and self._all_ranks_agree(time.monotonic() - start > 60 * max_minutes)
                if self.step_count % self.checkpoint_every == 0 or self.step_count == steps or out_of_time:
                    self.save()
                if out_of_time:
                    break
        return self.history

    @torch.no_grad()
    def validate(self, val_set: Iterable[Sequence[Tensor]]) -> dict[str, float]:
        """Mean PSNR-Y (crop = scale) of teacher and student over ``(lr, hr)`` pairs."""
        self.model.eval()
        scores = {"psnr_teacher": [], "psnr_student": []}
        for lr, hr in val_set:
            lr, hr = _as_batch(lr).to(self.device), _as_batch(hr).to(self.device)
            for key, out in self._val_outputs(lr).items():
                scores[key].append(psnr_y(out, hr, crop_border=self.model.scale))
        self.model.train()
        return {k: sum(v) / len(v) for k, v in scores.items() if v}

    def _val_outputs(self, lr: Tensor) -> dict[str, Tensor]:
        return {"psnr_teacher": self.model(lr, 1.0), "psnr_student": self.model(lr, self.width)}

    # ----------------------------------------------------------------- files
    def _log(self, record: dict) -> None:
        self.history.append(record)
        self._write_log([record], append=True)

    def _write_log(self, rows: list[dict], append: bool) -> None:
        """Append rows to ``out_dir/log.csv`` (rank 0), or rewrite it with exactly ``rows``."""
        if self.out_dir is None or not self.is_main:
            return
        lock_run_dir(self.out_dir)  # creates it; a second live run into it fails here
        path = os.path.join(self.out_dir, LOG_NAME)
        header = not (append and os.path.exists(path))
        with open(path, "a", newline="") if append else atomic_write(path, "w") as f:
            writer = csv.DictWriter(f, fieldnames=self.log_fields, extrasaction="ignore")
            if header:
                writer.writeheader()
            writer.writerows(rows)

    def state_dict(self) -> dict:
        return {
            "step": self.step_count,
            "arch": self.model.arch,
            "model_config": self.model.config,
            "width": self.width,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"step_size": self.lr_step_size, "gamma": self.lr_gamma, "base_lr": self.base_lr},
            "history": self.history,
            "dynamic": None if self.dynamic is None else self.dynamic.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["arch"] != self.model.arch or dict(state["model_config"]) != dict(self.model.config):
            raise ValueError(
                f"checkpoint: it holds {state['arch']} {state['model_config']}, but the trainer's model is "
                f"{self.model.arch} {self.model.config}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = state["step"]
        self.history = list(state["history"])
        if self.dynamic is not None:
            if state.get("dynamic") is None:
                raise ValueError("checkpoint: it has no history model, but the trainer uses negatives='dynamic'")
            self.dynamic.load_state_dict(state["dynamic"])

    def save(self) -> str | None:
        """Write ``out_dir/checkpoint.pt`` atomically (rank 0 only); returns its path."""
        if self.out_dir is None or not self.is_main:
            return None
        path = os.path.join(self.out_dir, CHECKPOINT_NAME)
        atomic_save(self.state_dict(), path)
        return path

    def resume(self) -> bool:
        """Load ``out_dir/checkpoint.pt`` if there is one; returns whether it did."""
        path = None if self.out_dir is None else os.path.join(self.out_dir, CHECKPOINT_NAME)
        if path is None or not os.path.exists(path):
            return False
        self.load_state_dict(load_checkpoint(path, map_location=self.device))
        self._write_log(self.history, append=False)  # drop rows of steps after the checkpoint
        return True

    def export(self) -> SlimSRModel:
        """The trained student as a standalone compact model."""
        return self.model.export(self.width)
