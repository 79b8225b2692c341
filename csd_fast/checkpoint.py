"""Checkpoint files: atomic writes (a killed or failing write never destroys the previous
checkpoint), and the file format version.

``FORMAT_VERSION`` 2: parameters in the official 8-bit units (``SlimSRModel.img_range``). Files
without a version (checkpoints and students of earlier csd_fast) hold [0, 1]-unit parameters:
``model_state_from_file`` converts them (``rescale_state`` by 255), giving the same outputs.
"""
from __future__ import annotations

import torch

from .fileio import atomic_write
from .models import SlimSRModel, rescale_state

FORMAT_VERSION = 2


def model_state_from_file(state: dict, version, arch: str) -> dict:
    """A model state dict (architecture ``arch``) of a file of format ``version`` (None: unversioned)
    in today's units."""
    if version is None or version == 1:
        return rescale_state(arch, state, SlimSRModel.img_range)
    if version != FORMAT_VERSION:
        raise ValueError(f"format_version: expected {FORMAT_VERSION} or an unversioned file, got {version!r} "
                         "(written by a newer csd_fast?)")
    return state


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
