"""Autotune results kept on disk, so a warm process (and every later one) launches without tuning.

Triton's autotuner benchmarks every config in every new process (the conv has ~15 tiles, each
compiled and timed per layer shape). This cache maps a key naming the device, the Triton version,
the kernel and the layer shape (sizes bucketed, see ``size_bucket``) to the config that won, in one
JSON file: ``$CSD_FAST_CACHE/autotune.json``, else ``~/.cache/csd_fast/autotune.json``. Writes are
atomic (a temporary file renamed over the old one) and merge with what other processes stored.
"""
from __future__ import annotations

from pathlib import Path

import torch
import triton

from csd_fast.disk_cache import JsonCache, cache_dir, cache_key

__all__ = ["TuneCache", "TUNE_CACHE", "cache_dir", "launch_tuned", "tune_key"]


def device_name(device: torch.device) -> str:
    """The GPU's marketing name (``NVIDIA H100 80GB HBM3``) or ``interpreter`` for CPU tensors."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "interpreter"


def tune_key(kernel: str, device: torch.device, **shape) -> str:
    """``device|triton version|kernel|name=value,...`` (shape entries in sorted order)."""
    return cache_key(device_name(device), f"triton {triton.__version__}", kernel, **shape)


class TuneCache(JsonCache):
    """The winning ``triton.Config`` per key in ``autotune.json`` (``csd_fast.disk_cache.JsonCache``)."""

    def __init__(self, path: Path | None = None):
        super().__init__("autotune.json", "autotune cache", path)

    def get(self, key: str) -> triton.Config | None:
        """The stored config for ``key``, or None (first call reads the file)."""
        entry = super().get(key)
        if entry is None:
            return None
        return triton.Config(dict(entry["kwargs"]), num_warps=entry["num_warps"], num_stages=entry["num_stages"])

    def put(self, key: str, config: triton.Config) -> None:
        """Remember ``config`` for ``key`` (the file rewritten atomically, merged with its current content)."""
        super().put(key, {"kwargs": dict(config.kwargs), "num_warps": config.num_warps, "num_stages": config.num_stages})


TUNE_CACHE = TuneCache()


def launch_tuned(kernel, grid, key: str, *args, **kwargs) -> None:
    """Launch the autotuned ``kernel`` with the config :data:`TUNE_CACHE` holds for ``key`` (no
    tuning), or tune it once through Triton's autotuner and store the winner."""
    config = TUNE_CACHE.get(key)
    if config is None:
        kernel[grid](*args, **kwargs)
        TUNE_CACHE.put(key, kernel.best_config)
        return
    kernel.fn[grid](*args, **kwargs, **config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)
