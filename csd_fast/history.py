"""DCKD's dynamic negatives: a history model of the student run on degraded LR inputs.

DCKD paper, "Dynamic Contrastive Regularization" (Eq. 4, 6), as its official code does it:

- an EMA of the student, updated after every optimizer step:
  ``ema = decay * ema + (1 - decay) * student`` (decay 0.999);
- the history model, refreshed from the EMA:
  ``history = refresh_decay * history + (1 - refresh_decay) * ema`` (refresh_decay 0.1) at steps
  chosen by ``schedule`` with the growing intervals ``s`` (paper: 1000, 2000, 3000):

  - ``"official"`` (default, the official code): phases of ``phase_steps`` iterations (100k; the
    last interval holds after the last phase), ``s = intervals[(step - 1) // phase_steps]``, and a
    refresh whenever ``step % s == 0``;
  - ``"thirds"`` (for short runs): ``s = intervals[i]`` during the i-th of ``len(intervals)``
    equal parts of the run (needs its length), and a refresh once ``s`` steps have passed since
    the last one;
- negatives ``N_1..N_n = history(D_1(lr), ..., D_n(lr))`` under ``no_grad``. With
  ``include_clean`` (the official code) the first one is the history model on the clean LR and
  the other n - 1 on degraded copies; without it all n are degraded.

Both copies start as the student's initial weights, are frozen (``requires_grad=False``, eval
mode) and are not seen by any optimizer. For a channel-splitting model (CSD) the copies hold the
whole shared model and run at ``width``; only its student slice matters.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import Tensor, nn

from .degradations import DEGRADATIONS, degrade
from .negatives import Negatives

PAPER_STEPS = 250_000
PAPER_INTERVALS = (1000, 2000, 3000)
PAPER_PHASE_STEPS = 100_000
PAPER_DECAY = 0.999
SCHEDULES = ("official", "thirds")


def _frozen_copy(model: nn.Module) -> nn.Module:
    clone = copy.deepcopy(model).eval()
    clone.requires_grad_(False)
    return clone


def refresh_interval(
    step: int, total_steps: int | None, intervals: Sequence[int], schedule: str = "official",
    phase_steps: int = PAPER_PHASE_STEPS,
) -> int:
    """``s(step)`` (steps count from 1). "official": ``intervals[(step - 1) // phase_steps]``;
    "thirds": ``intervals[i]`` in the i-th of ``len(intervals)`` equal parts of ``total_steps``
    (``intervals[0]`` when ``total_steps`` is None). Past the last phase the last interval holds."""
    if schedule == "official":
        phase = (step - 1) // phase_steps
    else:
        phase = 0 if total_steps is None else (step - 1) * len(intervals) // total_steps
    return intervals[min(max(phase, 0), len(intervals) - 1)]


def scaled_schedule(total_steps: int, reference_steps: int = PAPER_STEPS) -> dict:
    """``decay`` and ``intervals`` keeping the paper's proportions for a run of ``total_steps``.

    The EMA time constant ``1 / (1 - decay)`` (paper: 1000 steps) and the refresh intervals
    (paper: 1000, 2000, 3000) are scaled by ``total_steps / reference_steps``, floored at 1 step
    (time constant >= 1: decay >= 0), on the "thirds" schedule. For runs of a few hundred steps this makes the history
    trail the student by about one step, the regime the paper's Fig. 8(b) warns about: in
    ``bench/quality.py --quick`` (150 steps) training then diverges.
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps: expected an int >= 1, got {total_steps!r}")
    ratio = total_steps / reference_steps
    time_constant = max(1.0, ratio / (1.0 - PAPER_DECAY))
    return {
        "decay": 1.0 - 1.0 / time_constant,
        "intervals": tuple(max(1, round(s * ratio)) for s in PAPER_INTERVALS),
        "schedule": "thirds",
    }


class DynamicNegatives:
    """``negatives(lr) -> Negatives(images [n*B,3,sH,sW], index [n,B])``; ``update(student, step)``
    after each optimizer step (see module docstring).

    ``width``: the history model is called as ``history(x, width)`` (a slim model's student);
    None calls ``history(x)``. ``degradations``: names from ``csd_fast.degradations.DEGRADATIONS``
    applied in order to each degraded copy. ``schedule`` / ``phase_steps``: when the history
    model is refreshed (module docstring).
    """

    def __init__(
        self,
        student: nn.Module,
        n: int = 5,
        width: float | None = None,
        decay: float = PAPER_DECAY,
        refresh_decay: float = 0.1,
        intervals: Sequence[int] = PAPER_INTERVALS,
        degradations: Sequence[str] = ("noise",),
        include_clean: bool = True,
        schedule: str = "official",
        phase_steps: int = PAPER_PHASE_STEPS,
    ):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1 + include_clean:
            raise ValueError(f"n: expected an int >= {1 + include_clean} (include_clean={include_clean}), got {n!r}")
        for name, value in (("decay", decay), ("refresh_decay", refresh_decay)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}: expected a float in [0, 1), got {value!r}")
        intervals = tuple(intervals)
        if not intervals or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in intervals):
            raise ValueError(f"intervals: expected a non-empty sequence of ints >= 1, got {intervals!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}, got {schedule!r}")
        if isinstance(phase_steps, bool) or not isinstance(phase_steps, int) or phase_steps < 1:
            raise ValueError(f"phase_steps: expected an int >= 1, got {phase_steps!r}")
        degradations = tuple(degradations)
        bad = [d for d in degradations if d not in DEGRADATIONS]
        if not degradations or bad:
            raise ValueError(f"degradations: expected names from {sorted(DEGRADATIONS)}, got {degradations!r}")
        self.n, self.width = n, width
        self.decay, self.refresh_decay, self.intervals = float(decay), float(refresh_decay), intervals
        self.degradations, self.include_clean = degradations, include_clean
        self.schedule, self.phase_steps = schedule, phase_steps
        self.ema = _frozen_copy(student)
        self.history = _frozen_copy(student)
        self.last_refresh = 0

    @staticmethod
    def _lerp(target: nn.Module, source: nn.Module, keep: float) -> None:
        """``target = keep * target + (1 - keep) * source`` on parameters; buffers are copied."""
        mine, theirs = list(target.parameters()), [p.detach() for p in source.parameters()]
        torch._foreach_lerp_(mine, theirs, 1.0 - keep)
        for b_t, b_s in zip(target.buffers(), source.buffers()):
            b_t.copy_(b_s)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int, total_steps: int | None = None) -> bool:
        """EMA update after optimizer step ``step``; refreshes the history model when the schedule
        says so (module docstring). Returns whether it refreshed."""
        self._lerp(self.ema, student, self.decay)
        if not self.refresh_due(step, total_steps):
            return False
        self._lerp(self.history, self.ema, self.refresh_decay)
        self.last_refresh = step
        return True

    def refresh_due(self, step: int, total_steps: int | None = None) -> bool:
        """Whether the history model is refreshed after step ``step`` (module docstring)."""
        s = refresh_interval(step, total_steps, self.intervals, self.schedule, self.phase_steps)
        if self.schedule == "official":
            return step % s == 0
        return step - self.last_refresh >= s

    @torch.no_grad()
    def __call__(self, lr: Tensor) -> Negatives:
        copies = [degrade(lr, self.degradations) for _ in range(self.n - self.include_clean)]
        x = torch.cat(([lr] if self.include_clean else []) + copies)
        images = self.history(x) if self.width is None else self.history(x, self.width)
        b = lr.shape[0]
        index = torch.arange(self.n * b, device=images.device).view(self.n, b)
        return Negatives(images, index)

    def state_dict(self) -> dict:
        return {"ema": self.ema.state_dict(), "history": self.history.state_dict(), "last_refresh": self.last_refresh}

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state["ema"])
        self.history.load_state_dict(state["history"])
        self.last_refresh = int(state["last_refresh"])
