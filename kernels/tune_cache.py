"""Autotune results kept on disk, so a warm process (and every later one) launches without tuning.

Triton's autotuner benchmarks every config in every new process (the conv has ~15 tiles, each
compiled and timed per layer shape). This cache maps a key naming the device, the Triton version,
the kernel and the layer shape (sizes bucketed, see ``size_bucket``) to the config that won, in one
JSON file: ``$CSD_FAST_CACHE/autotune.json``, else ``~/.cache/csd_fast/autotune.json``. Writes are
atomic (a temporary file renamed over the old one) and merge with what other processes stored.
"""
from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path

import torch
import triton

from csd_fast.fileio import atomic_write_text

_FILE = "autotune.json"


def cache_dir() -> Path:
    """``$CSD_FAST_CACHE`` if set, else ``~/.cache/csd_fast``."""
    return Path(os.environ.get("CSD_FAST_CACHE") or Path.home() / ".cache" / "csd_fast")


def device_name(device: torch.device) -> str:
    """The GPU's marketing name (``NVIDIA H100 80GB HBM3``) or ``interpreter`` for CPU tensors."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "interpreter"


def tune_key(kernel: str, device: torch.device, **shape) -> str:
    """``device|triton version|kernel|name=value,...`` (shape entries in sorted order)."""
    fields = ",".join(f"{k}={shape[k]}" for k in sorted(shape))
    return f"{device_name(device)}|triton {triton.__version__}|{kernel}|{fields}"


class TuneCache:
    """The winning ``triton.Config`` per key, read from disk on first use, written on every new entry."""

    def __init__(self, path: Path | None = None):
        self._path = path
        self._entries: dict | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path or cache_dir() / _FILE

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            warnings.warn(f"{self.path}: unreadable autotune cache ({e}); tuning again", RuntimeWarning, stacklevel=3)
            return {}
        if not isinstance(data, dict):
            warnings.warn(f"{self.path}: expected a JSON object, got {type(data).__name__}; tuning again", RuntimeWarning, stacklevel=3)
            return {}
        return data

    def get(self, key: str) -> triton.Config | None:
        """The stored config for ``key``, or None (first call reads the file)."""
        with self._lock:
            if self._entries is None:
                self._entries = self._read()
            entry = self._entries.get(key)
        if entry is None:
            return None
        return triton.Config(dict(entry["kwargs"]), num_warps=entry["num_warps"], num_stages=entry["num_stages"])

    def put(self, key: str, config: triton.Config) -> None:
        """Remember ``config`` for ``key`` and rewrite the file atomically, merged with its current content."""
        entry = {"kwargs": dict(config.kwargs), "num_warps": config.num_warps, "num_stages": config.num_stages}
        with self._lock:
            merged = self._read()
            merged.update(self._entries or {})
            merged[key] = entry
            self._entries = merged
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(merged, indent=1, sort_keys=True))


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
