"""Atomic checkpoint files: a killed or failing write never destroys the previous checkpoint."""
from __future__ import annotations

import torch

from .fileio import atomic_write


def atomic_save(obj, path: str) -> None:
    """``torch.save`` through :func:`csd_fast.fileio.atomic_write` (temp file, fsync, rename)."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load a checkpoint written by ``atomic_save``; a corrupt file is named in the error."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"checkpoint: could not read {path!r} ({type(err).__name__}: {err})") from err
