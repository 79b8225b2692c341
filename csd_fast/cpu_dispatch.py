"""``backend="cpu-auto"`` (opt-in): per layer shape, the native fused kernels or oneDNN, whichever is faster here.

:class:`CpuAutoBackend` (``"cpu-auto"``) packs every conv for both :class:`~csd_fast.native.NativeBackend`
(the C++ kernels, epilogues fused into the store) and :class:`~csd_fast.backends.EagerBackend`
(``F.conv2d`` on channels_last, i.e. oneDNN, then the epilogue as in-place passes), and sends each
call of the backend protocol (``conv``, ``res_block``, ``ca_residual``) to one of them. Neither wins
everywhere (issue 12's benchmark: oneDNN is ahead on some CARN and small-input layers, the native
kernels on the 3-channel head and tail and on fused residual blocks), so the choice is measured.

**The choice** for one call site is keyed (:func:`csd_fast.disk_cache.cache_key`) by the CPU model,
the instruction set the native kernels run, the torch version, the op and its epilogue flags, the
kernel size and channel counts, the dtype, ``torch.get_num_threads()`` and the input size (the
pixel count ``N*H*W`` and the width, each rounded up to a power of two, so every image size does not
measure again). At the first call with a new key both variants run on the real input into scratch
outputs: one warm-up each, then :data:`MIN_ROUNDS` to :data:`MAX_ROUNDS` rounds in alternating order
(as many as fit in about :data:`BUDGET_S` seconds), median per variant. The native kernels are the
fixed default: oneDNN is taken only when its median is below :data:`MARGIN` times theirs. The choice
is kept in memory and in ``$CSD_FAST_CACHE/cpu_dispatch.json`` (``~/.cache/csd_fast`` by default), so
later processes on the same machine never measure again; delete the file to measure afresh.

**Forcing it** (deterministic, nothing measured or stored): ``CSD_FAST_CPU_DISPATCH=native`` or
``=eager`` (read when the backend is built; default ``measure``), ``CpuAutoBackend(..., mode=...)``,
or ``accelerate(..., backend="native" | "eager")`` for the plain backends. Under ``torch.compile``
nothing is measured either: a stored choice is used, else the native kernels.
"""
from __future__ import annotations

import os
import statistics
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from . import native
from .backends import BACKEND_CLASSES, Backend, EagerBackend, PackedConv
from .disk_cache import JsonCache, cache_key

__all__ = ["CpuAutoBackend", "DualConv", "CHOICES", "MODES", "choose", "measure"]

MODES = ("measure", "native", "eager")
MARGIN = 0.95  # oneDNN must be >= 5% faster (median) to replace the native default
MIN_ROUNDS, MAX_ROUNDS, BUDGET_S = 3, 15, 0.05

CHOICES = JsonCache("cpu_dispatch.json", "CPU dispatch cache")
_MEASURING = threading.Lock()  # one measurement at a time in this process: two would slow each other down


@dataclass
class DualConv:
    """One conv packed for both backends (and its kernel size ``k``)."""

    native: native.NativeConv
    eager: PackedConv
    k: int


def measure(runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median seconds per call of each ``runs[name]()``: one warm-up call each, then rounds in
    alternating order, as many as fit in ~``BUDGET_S`` (between ``MIN_ROUNDS`` and ``MAX_ROUNDS``)."""
    names = list(runs)
    warm = []
    for name in names:
        t0 = time.perf_counter()
        runs[name]()
        warm.append(time.perf_counter() - t0)
    rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, int(BUDGET_S / max(sum(warm), 1e-9))))
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def choose(seconds: dict[str, float]) -> str:
    """``"eager"`` when its median is below ``MARGIN`` x the native one, else ``"native"``."""
    return "eager" if seconds["eager"] < MARGIN * seconds["native"] else "native"


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``AMD EPYC 9654 96-Core Processor``), else ``platform.processor()``."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _bucket(n: int) -> int:
    """The next power of two >= ``n``."""
    return 1 << max(int(n) - 1, 0).bit_length()


class CpuAutoBackend(Backend):
    """The backend protocol, each call sent to the native or the eager backend (module docstring).
    ``mode``: ``"measure"`` (default: ``$CSD_FAST_CPU_DISPATCH`` or ``measure``), ``"native"`` or ``"eager"``."""

    name = "cpu-auto"

    def __init__(self, dtype: torch.dtype, mean: Tensor, mode: Optional[str] = None):
        super().__init__(dtype, mean)
        self.native = native.NativeBackend(dtype, mean)
        self.eager = EagerBackend(dtype, mean)
        self.mode = mode if mode is not None else os.environ.get("CSD_FAST_CPU_DISPATCH", "measure")
        if self.mode not in MODES:
            where = "mode" if mode is not None else "CSD_FAST_CPU_DISPATCH"
            raise ValueError(f"{where}: expected one of {list(MODES)}, got {self.mode!r}")
        isa = next(name for name, code in native.ISAS.items() if code == self.native.isa)
        self._context = (cpu_model(), f"isa {native.best_isa(dtype) if isa == 'auto' else isa}", f"torch {torch.__version__}")

    def pack(self, conv: nn.Conv2d, shuffle: int = 1) -> DualConv:
        return DualConv(self.native.pack(conv, shuffle), self.eager.pack(conv, shuffle), conv.kernel_size[0])

    def conv(self, x, layer: DualConv, *, out=None, residual=None, res_scale=1.0, relu=False, shuffle=1, sub_mean=False,
             add_mean=False, pool=None):
        epilogue = dict(residual=residual, res_scale=res_scale, relu=relu, shuffle=shuffle, sub_mean=sub_mean, add_mean=add_mean)

        def run(ops: Backend, dest, acc):
            return ops.conv(x, getattr(layer, ops.name), out=dest, pool=acc if ops is self.native else None, **epilogue)

        flags = dict(residual=residual is not None, relu=relu, shuffle=shuffle, sub_mean=sub_mean, add_mean=add_mean,
                     pool=pool is not None, out=out is not None)
        ops = self._pick("conv", x, run, out, pool, k=layer.k, cout=layer.native.cout, **flags)
        return run(ops, out, pool)

    def res_block(self, x, conv1: DualConv, conv2: DualConv, *, res_scale=1.0, relu_out=False, out=None):
        def run(ops: Backend, dest, acc):
            return ops.res_block(x, getattr(conv1, ops.name), getattr(conv2, ops.name), res_scale=res_scale,
                                 relu_out=relu_out, out=dest)

        ops = self._pick("res_block", x, run, out, None, k=conv1.k, mid=conv1.native.cout, cout=conv2.native.cout,
                         relu_out=relu_out, out=out is not None)
        return run(ops, out, None)

    def ca_residual(self, x, t, conv2: DualConv, att, pool):
        def run(ops: Backend, dest, acc):
            return ops.ca_residual(x, t, getattr(conv2, ops.name), att, acc)

        ops = self._pick("ca_residual", t, run, None, pool, k=conv2.k, cout=conv2.native.cout)
        return run(ops, None, pool)

    def pools(self, count, n, c, device):
        return self.native.pools(count, n, c, device)

    # ---- the choice ----------------------------------------------------------------------------

    def _pick(self, op: str, x: Tensor, run, out, pool, /, **shape) -> Backend:
        """The backend for this call: forced by ``mode``, stored under its key, or measured now with
        ``run(backend, scratch_out, scratch_pool)`` and stored."""
        if self.mode != "measure":
            return getattr(self, self.mode)
        n, c, h, w = x.shape
        key = cache_key(*self._context, op, dtype=str(self.dtype).removeprefix("torch."), threads=torch.get_num_threads(),
                        cin=c, pixels=_bucket(n * h * w), width=_bucket(w), **shape)
        choice = _stored_choice(key)
        if choice is None and not torch.compiler.is_compiling():
            with _MEASURING:
                choice = _stored_choice(key) or self._measure(key, run, out, pool)
        return getattr(self, choice or "native")

    def _measure(self, key: str, run, out, pool) -> str:
        """Time both backends on scratch outputs laid out like ``out`` (and zeroed pools); store the winner."""
        scratch_out = None if out is None else torch.empty_strided(out.shape, out.stride(), dtype=out.dtype)

        def call(ops):
            return lambda: run(ops, scratch_out, None if pool is None else torch.zeros_like(pool))

        seconds = measure({"native": call(self.native), "eager": call(self.eager)})
        entry = {"choice": choose(seconds), "ms": {name: round(s * 1e3, 4) for name, s in seconds.items()}}
        try:
            CHOICES.put(key, entry)
        except OSError as e:
            warnings.warn(f"{CHOICES.path}: cannot store the CPU dispatch choice ({e}); it is kept for this process only",
                          RuntimeWarning, stacklevel=2)
        return entry["choice"]


def _stored_choice(key: str) -> Optional[str]:
    """The stored backend name for ``key``; None when there is none (or the entry is not one we wrote)."""
    entry = CHOICES.get(key)
    choice = entry.get("choice") if isinstance(entry, dict) else None
    return choice if choice in ("native", "eager") else None


BACKEND_CLASSES["cpu-auto"] = CpuAutoBackend
