"""Measured choices kept on disk, so a warm process (and every later one) does not measure again.

Two users: the Triton autotune winners (``csd_fast.kernels.tune_cache``) and the CPU per-layer
backend choices (``csd_fast.cpu_dispatch``). Each is one JSON object in one file under
:func:`cache_dir`, mapping a key (:func:`cache_key`: what the choice depends on, e.g. the device,
the library version, the layer shape) to a JSON value. The file is read once, on first use; each
new entry rewrites it atomically (``csd_fast.fileio``), merged with what other processes stored
meanwhile. An unreadable or malformed file is ignored with a warning (and replaced on the next write).
"""
from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path

from .fileio import atomic_write_text

__all__ = ["cache_dir", "cache_key", "JsonCache"]


def cache_dir() -> Path:
    """``$CSD_FAST_CACHE`` if set, else ``~/.cache/csd_fast``."""
    return Path(os.environ.get("CSD_FAST_CACHE") or Path.home() / ".cache" / "csd_fast")


def cache_key(*context: str, **shape) -> str:
    """``context|...|name=value,...``: the ``context`` strings, then ``shape`` in sorted order."""
    return "|".join([*context, ",".join(f"{k}={shape[k]}" for k in sorted(shape))])


class JsonCache:
    """JSON values by key in ``cache_dir() / name`` (or ``path``), read on first use, written on every
    new entry; ``what`` names the cache in warnings (``"autotune cache"``)."""

    def __init__(self, name: str, what: str, path: Path | None = None):
        self.name, self.what = name, what
        self._path = path
        self._entries: dict | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path or cache_dir() / self.name

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            warnings.warn(f"{self.path}: unreadable {self.what} ({e}); ignoring it", RuntimeWarning, stacklevel=3)
            return {}
        if not isinstance(data, dict):
            warnings.warn(f"{self.path}: expected a JSON object in the {self.what}, got {type(data).__name__}; ignoring it",
                          RuntimeWarning, stacklevel=3)
            return {}
        return data

    def get(self, key: str):
        """The stored value for ``key``, or None (the first call reads the file)."""
        with self._lock:
            if self._entries is None:
                self._entries = self._read()
            return self._entries.get(key)

    def put(self, key: str, value) -> None:
        """Remember ``value`` for ``key`` and rewrite the file atomically, merged with its current content."""
        with self._lock:
            merged = self._read()
            merged.update(self._entries or {})
            merged[key] = value
            self._entries = merged
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(merged, indent=1, sort_keys=True))
