"""CSDTrainer: the training loop of CSD (steps, schedule, checkpoints, logs, validation, DDP).

The objective (loss terms, negatives) lives in ``csd_fast.objective``; the options, listed once
with their types and ranges, in ``csd_fast.options.TrainOptions``. As the official code:
Adam (lr 1e-4, betas 0.9/0.999, eps 1e-8), the rate x0.1 at half of the run (``lr_milestones``,
``lr_gamma``: a ``MultiStepLR`` whose milestones are fixed in steps when the run starts and
checkpointed, so a resumed run never raises the rate again).

Every step is seeded from ``(seed, step)`` (its negatives and noise) and batches come from
``csd_fast.data.loader.batches`` (epochs without replacement, items seeded by their position in
the run), so a run resumed from a checkpoint draws the same batches and negatives as an
uninterrupted one. A checkpoint records the run's options; resuming with different ones is
refused, naming them. SIGINT/SIGTERM during ``fit`` finish the current step, write a checkpoint,
then deliver the signal as usual (exit status 130 / 143).
"""
from __future__ import annotations

import collections
import contextlib
import csv
import json
import os
import signal
import threading
import time
from dataclasses import fields, replace
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .checkpoint import FORMAT_VERSION, atomic_save, load_checkpoint
from .data import loader
from .fileio import atomic_write, lock_run_dir
from .history import DynamicNegatives
from .losses import ContrastiveLoss
from .metrics import psnr_y
from .models import SlimSRModel, check_lr_input, check_width
from .negatives import Negatives
from .objective import CSDObjective
from .options import TrainOptions, differing

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"
CONFIG_NAME = "config.json"
_ALIASES = {"out_dir": "out", "batch_size": "batch", "num_workers": "workers"}  # Python names of TrainOptions fields


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63 - 1)


def _as_batch(x: Tensor) -> Tensor:
    return x.unsqueeze(0) if x.dim() == 3 else x


def make_options(options: TrainOptions | None, kwargs: dict) -> TrainOptions:
    """``options`` (default: the defaults) with keyword overrides, checked. Keywords are
    ``TrainOptions`` fields, ``out_dir`` / ``batch_size`` for ``out`` / ``batch``, and ``progress``
    (= not ``quiet``); anything else is a TypeError naming it."""
    known = {f.name for f in fields(TrainOptions)}
    values = {}
    for key, value in kwargs.items():
        if key == "progress":
            key, value = "quiet", (not value if isinstance(value, bool) else value)
        key = _ALIASES.get(key, key)
        if key not in known:
            raise TypeError(f"{key}: not an option of CSDTrainer; expected one of {sorted(known | set(_ALIASES))}")
        values[key] = value
    if options is not None and not isinstance(options, TrainOptions):
        raise TypeError(f"options: expected a csd_fast.TrainOptions, got {type(options).__name__}")
    return replace(options or TrainOptions(), **values).check()


class CSDTrainer:
    """Train ``model`` (teacher at width 1.0) and its student at ``width`` with CSD.

    Options: a ``TrainOptions`` and/or its fields as keywords (``width``, ``neg_num``, ``negatives``,
    ``lambda_t``, ``lambda_c``, ``reduction``, ``vgg_input``, ``vgg_weights``, ``lr``, ``lr_milestones``,
    ``lr_gamma``, ``seed``, ...; ``out_dir`` for ``out``, ``progress`` for not ``quiet``); all are
    validated here. ``negatives``: "official" (default), "others", "self-blur" (``csd_fast.negatives``)
    or "dynamic" (DCKD's history model, options in ``dynamic_options``; checkpointed).
    ``neg_num`` / ``lambda_c`` default to 10 / 200 (CSD), or 5 / 0.1 * ``pixel_range`` for "dynamic".
    ``contrastive``: a ready ``ContrastiveLoss`` (else built from ``vgg_weights``, ``vgg_input``,
    ``reduction``). ``out_dir``: where ``checkpoint.pt``, ``log.csv`` and ``config.json`` go (None:
    nothing is written).
    """

    log_fields = ("step", "lr", "loss", "l1_student", "l1_teacher", "contrastive", "psnr_teacher", "psnr_student")
    method = "csd"  # the TrainOptions.method this class trains

    def __init__(self, model: SlimSRModel, options: TrainOptions | None = None, *,
                 contrastive: ContrastiveLoss | None = None, device: str | torch.device | None = None, **kwargs):
        if not isinstance(model, SlimSRModel):
            raise TypeError(f"model: expected a csd_fast slim model (SlimEDSR/SlimRCAN/SlimCARN), got {type(model).__name__}")
        opts = make_options(options, kwargs)
        if opts.method != self.method:
            raise ValueError(f"method: {type(self).__name__} trains {self.method!r}, got {opts.method!r} "
                             "(csd: csd_fast.CSDTrainer, dckd: csd_fast.KDTrainer)")
        self.width = check_width(opts.width)
        model.num_params(self.width)  # refuses widths that leave 0 channels
        dynamic = opts.negatives == "dynamic"
        if opts.neg_num is None:
            opts.neg_num = 5 if dynamic else 10
        if opts.lambda_c is None:
            opts.lambda_c = 0.1 * opts.pixel_range if dynamic else 200.0
        self.options = opts
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device)
        self.contrastive = (contrastive or ContrastiveLoss(
            reduction=opts.reduction, vgg_weights=opts.vgg_weights, vgg_input=opts.vgg_input)).to(self.device)
        self.dynamic = None
        if dynamic:
            self.dynamic = DynamicNegatives(self.model, n=opts.neg_num, width=self.width, **(opts.dynamic_options or {}))
        self.objective = self._make_objective()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=opts.lr, betas=tuple(opts.betas), eps=1e-8)
        self.scheduler: torch.optim.lr_scheduler.MultiStepLR | None = None  # made by fit (needs the run's length)
        self.total_steps: int | None = None
        self.step_count = 0
        self.history: list[dict] = []
        self.rank, self.world = 0, 1
        self._setup_distributed()

    # option values under their usual names
    neg_num = property(lambda self: self.options.neg_num)
    negatives = property(lambda self: self.options.negatives)
    lambda_t = property(lambda self: self.options.lambda_t)
    lambda_c = property(lambda self: self.options.lambda_c)
    pixel_range = property(lambda self: self.options.pixel_range)
    seed = property(lambda self: self.options.seed)
    out_dir = property(lambda self: self.options.out)

    def _make_objective(self) -> CSDObjective:
        o = self.options
        return CSDObjective(self.model, self.width, o.negatives, o.neg_num, o.lambda_t, o.lambda_c, o.pixel_range,
                            self.contrastive, self.dynamic)

    # ----------------------------------------------------------------- distributed
    def _setup_distributed(self) -> None:
        """Under ``torchrun`` (an initialized process group), wrap the forward in DDP and let the
        objective see the global batch."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.objective.net = nn.parallel.DistributedDataParallel(self.objective.net, device_ids=ids)
            self.objective.group = dist.group.WORLD

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
    def compute_loss(self, lr: Tensor, hr: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """The objective on one batch (negatives drawn with ``generator``); returns the loss and its terms."""
        loss, terms = self.objective(lr, hr, generator)
        return loss, self.objective.log_values(terms)

    def make_negatives(self, lr: Tensor, generator: torch.Generator | None = None) -> Negatives:
        """This step's negatives for the anchors of ``lr`` (see ``CSDObjective.make_negatives``)."""
        return self.objective.make_negatives(lr, generator)

    def step_generator(self, step: int) -> torch.Generator:
        """The generator of step ``step``'s negatives (the same on every rank, and after a resume)."""
        return torch.Generator().manual_seed(_step_seed(self.seed, step) ^ 0x5EED)

    def train_step(self, lr: Tensor, hr: Tensor) -> dict[str, float]:
        """One optimizer step; stops with FloatingPointError (before any update) on a non-finite loss."""
        check_lr_input(lr, "lr")
        self.objective.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, terms = self.compute_loss(lr.to(self.device), hr.to(self.device), self.step_generator(self.step_count + 1))
        if self._all_ranks_agree(not torch.isfinite(loss).item()):  # every rank stops, none waits in backward
            where = f" on rank {self.rank} (non-finite on at least one rank)" if self.world > 1 else ""
            raise FloatingPointError(
                f"loss is {loss.item()}{where} at step {self.step_count + 1} (terms: {terms}); training stopped "
                "before updating the weights, and no checkpoint was written for this step. Check the "
                "batch for NaN/Inf pixels or lower the learning rate."
            )
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step_count += 1
        if self.dynamic is not None:
            self.dynamic.update(self.model, self.step_count, self.total_steps)
        return terms

    # ----------------------------------------------------------------- schedule
    def _make_scheduler(self, steps: int) -> None:
        """x ``lr_gamma`` after each milestone (fractions of ``steps`` resolved now, then fixed)."""
        milestones = sorted(max(1, round(m * steps)) if m < 1 else int(m) for m in self.options.lr_milestones)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones, self.options.lr_gamma,
                                                              last_epoch=-1)
        if self.step_count:  # train_step calls before fit: bring the schedule to the current step
            for _ in range(self.step_count):
                self.scheduler.step()

    def _scheduler_state(self) -> dict | None:
        if self.scheduler is None:
            return None
        state = self.scheduler.state_dict()
        state["milestones"] = sorted(state["milestones"].elements())  # a plain list (safe to load)
        return state

    @property
    def current_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    # ----------------------------------------------------------------- loop
    def fit(
        self,
        train_set,
        steps: int | None = None,
        val_set: Iterable | None = None,
        batch_size: int | None = None,
        resume: bool | None = None,
        max_minutes: float | None = None,
        num_workers: int | None = None,
    ) -> list[dict]:
        """Train until ``steps`` optimizer steps (or ``max_minutes``); returns the log history.

        ``train_set[i]`` gives ``(lr [3,h,w], hr [3,sh,sw])``. Unset arguments take the trainer's
        options. With ``resume=True`` and a checkpoint in ``out_dir``, training continues from its
        step (refused if the checkpoint's options differ, see ``csd_fast.options``).
        ``num_workers``: DataLoader worker processes reading ``train_set`` (0: this process); the
        batches do not depend on it.
        """
        given = dict(steps=steps, batch=batch_size, resume=resume, max_minutes=max_minutes, workers=num_workers)
        self.options = replace(self.options, **{k: v for k, v in given.items() if v is not None}).check()
        o = self.options
        if o.batch % self.world:
            raise ValueError(f"batch_size: expected a multiple of the world size {self.world}, got {o.batch}")
        if len(train_set) == 0:
            raise ValueError("train_set: expected at least one training pair, got an empty dataset")
        self.total_steps = o.steps
        if o.resume:
            self.resume()
        if self.scheduler is None:
            self._make_scheduler(o.steps)
        self._write_config()
        batches = loader.batches(train_set, o.batch, self.seed, self.step_count, o.workers, self.world, self.rank)
        start = time.monotonic()
        val_every = o.val_every or max(1, o.steps // 4)
        with _SignalFlag() as interrupted, self._tensorboard() as board, tqdm(
            total=o.steps, initial=self.step_count, disable=not (not o.quiet and self.is_main), desc="CSD"
        ) as bar:
            while self.step_count < o.steps:
                lr, hr = next(batches)
                torch.manual_seed(_step_seed(self.seed, self.step_count + 1))  # this step's noise (dynamic negatives)
                lr_used = self.current_lr
                terms = self.train_step(lr, hr)
                record = {"step": self.step_count, "lr": lr_used, **terms}
                if val_set is not None and (self.step_count % val_every == 0 or self.step_count == o.steps):
                    record.update(self.validate(val_set))
                self._log(record, board)
                bar.update(1)
                bar.set_postfix(loss=f"{terms['loss']:.4f}")
                out_of_time = o.max_minutes is not None and time.monotonic() - start > 60 * o.max_minutes
                stop = self._all_ranks_agree(out_of_time or interrupted.signum is not None)
                if self.step_count % o.checkpoint_every == 0 or self.step_count == o.steps or stop:
                    self.save()
                if stop:
                    break
        interrupted.deliver()
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
    def _log(self, record: dict, board=None) -> None:
        self.history.append(record)
        self._write_log([record], append=True)
        if board is not None:
            for key, value in record.items():
                if key != "step":
                    board.add_scalar(key, value, record["step"])

    @contextlib.contextmanager
    def _tensorboard(self):
        """A TensorBoard writer streaming to ``out_dir/tensorboard`` when tensorboard is installed (else None)."""
        from .plots import tensorboard_writer

        writer = None
        if self.out_dir is not None and self.is_main:
            writer = tensorboard_writer(os.path.join(self.out_dir, "tensorboard"))
        try:
            yield writer
        finally:
            if writer is not None:
                writer.close()

    def _write_log(self, rows: list[dict], append: bool) -> None:
        """Append rows to ``out_dir/log.csv`` (rank 0), or rewrite it with exactly ``rows``."""
        if self.out_dir is None or not self.is_main:
            return
        lock_run_dir(self.out_dir)  # also here: resume() rewrites the log before the config is written
        path = os.path.join(self.out_dir, LOG_NAME)
        header = not (append and os.path.exists(path))
        with open(path, "a", newline="") if append else atomic_write(path, "w") as f:
            writer = csv.DictWriter(f, fieldnames=self.log_fields, extrasaction="ignore")
            if header:
                writer.writeheader()
            writer.writerows(rows)

    def _write_config(self) -> None:
        """``out_dir/config.json``: the run's options and model, written when the run starts."""
        if self.out_dir is None or not self.is_main:
            return
        lock_run_dir(self.out_dir)  # creates it; a second live run into it fails here
        config = {"format_version": FORMAT_VERSION, "arch": self.model.arch, "model_config": self.model.config,
                  "options": self.options.to_dict()}
        with atomic_write(os.path.join(self.out_dir, CONFIG_NAME), "w") as f:
            f.write(json.dumps(config, indent=2, default=str) + "\n")

    def state_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "step": self.step_count,
            "arch": self.model.arch,
            "model_config": self.model.config,
            "width": self.width,
            "options": self.options.checked_values(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self._scheduler_state(),
            "history": self.history,
            "dynamic": None if self.dynamic is None else self.dynamic.state_dict(),
        }

    def load_state_dict(self, state: dict, allow_changed: Sequence[str] = ()) -> None:
        """Restore a checkpoint of this trainer's run; refuses other models, options and file formats."""
        if state.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"checkpoint: format version {state.get('format_version')!r} (written by an older csd_fast), expected "
                f"{FORMAT_VERSION}; its weights still load as a teacher (load_teacher / --teacher), but a run "
                "resumes only from a checkpoint of this version"
            )
        if state["arch"] != self.model.arch or dict(state["model_config"]) != dict(self.model.config):
            raise ValueError(
                f"checkpoint: it holds {state['arch']} {state['model_config']}, but the trainer's model is "
                f"{self.model.arch} {self.model.config}"
            )
        current = self.options.checked_values()
        changed = differing(state["options"], current, allow_changed)
        if changed:
            listing = ", ".join(f"{k} (checkpoint {state['options'][k]!r}, now {current[k]!r})" for k in changed)
            raise ValueError(f"checkpoint: the run's options changed: {listing}; resume with the same options, "
                             "or allow the change explicitly (allow_changed / --allow-changed NAME)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = state["step"]
        self.history = list(state["history"])
        if state["scheduler"] is not None:
            sched = dict(state["scheduler"])
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, sched["milestones"], sched["gamma"])
            sched["milestones"] = collections.Counter(sched["milestones"])
            self.scheduler.load_state_dict(sched)
        if self.dynamic is not None:
            if state.get("dynamic") is None:
                raise ValueError("checkpoint: it has no history model, but the trainer uses negatives='dynamic'")
            self.dynamic.load_state_dict(state["dynamic"])

    def save(self) -> str | None:
        """Write ``out_dir/checkpoint.pt`` atomically (rank 0 only); returns its path. Refuses (with
        FloatingPointError, nothing written) when a parameter holds NaN or Inf."""
        if self.out_dir is None or not self.is_main:
            return None
        bad = [name for name, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise FloatingPointError(
                f"parameters: {len(bad)} hold NaN/Inf after step {self.step_count} (first: {bad[0]}); no checkpoint "
                "was written (the previous one is kept). Lower the learning rate."
            )
        path = os.path.join(self.out_dir, CHECKPOINT_NAME)
        atomic_save(self.state_dict(), path)
        return path

    def resume(self) -> bool:
        """Load ``out_dir/checkpoint.pt`` if there is one; returns whether it did."""
        path = None if self.out_dir is None else os.path.join(self.out_dir, CHECKPOINT_NAME)
        if path is None or not os.path.exists(path):
            return False
        self.load_state_dict(load_checkpoint(path, map_location=self.device), self.options.allow_changed)
        self._write_log(self.history, append=False)  # drop rows of steps after the checkpoint
        return True

    def load_teacher(self, path, **hints) -> None:
        """Start from a teacher file (a csd_fast checkpoint, or a foreign state dict: see
        ``csd_fast.convert``) of the trainer's architecture and size."""
        from .student_io import load_model

        loaded = load_model(path, **hints)
        if loaded.kind == "student":
            raise ValueError(f"{path}: is an exported student; CSD needs the full teacher")
        theirs = loaded.model
        if theirs.arch != self.model.arch or dict(theirs.config) != dict(self.model.config):
            raise ValueError(f"{path}: holds {theirs.arch} {theirs.config}, but the trainer's model is "
                             f"{self.model.arch} {self.model.config}")
        with torch.no_grad():
            self.model.load_state_dict(theirs.state_dict())
        if self.dynamic is not None:  # the history model starts from the student's weights
            self.dynamic = DynamicNegatives(self.model, n=self.neg_num, width=self.width,
                                            **(self.options.dynamic_options or {}))
            self.objective.dynamic = self.dynamic

    def export(self) -> SlimSRModel:
        """The trained student as a standalone compact model."""
        return self.model.export(self.width)


class _SignalFlag:
    """Within ``with``: SIGINT/SIGTERM only record ``signum`` (the loop saves, then stops); ``deliver()``
    after the block re-sends a recorded signal to the restored handlers (usual exit status 130 / 143).
    A second signal goes straight to the restored handlers (a second Ctrl-C stops at once). Does
    nothing outside the main thread (signal handlers can only be set there)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "_SignalFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def _record(self, signum, frame) -> None:
        if self.signum is not None:  # a second signal: stop now, as without the handler
            self.__exit__()
            _hand_over(signum)
            return
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def deliver(self) -> None:
        if self.signum is not None:
            signum, self.signum = self.signum, None
            _hand_over(signum)


def _hand_over(signum: int) -> None:
    """Give ``signum`` to its current handler in place: a Python handler (Ctrl-C's
    ``default_int_handler`` raises KeyboardInterrupt) is called right here, since a re-sent signal
    whose handler runs inside a finalizer is swallowed; SIG_DFL is re-sent and ends the process."""
    handler = signal.getsignal(signum)
    if callable(handler):
        handler(signum, None)
    else:
        os.kill(os.getpid(), signum)
