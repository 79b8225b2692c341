"""Checkpoint files: atomic writes (a killed or failing write never destroys the previous
checkpoint), and the file format version.

``FORMAT_VERSION`` 2: parameters in the official 8-bit units (``SlimSRModel.img_range``). Files
without a version (checkpoints and students of earlier csd_fast) hold [0, 1]-unit parameters:
``model_state_from_file`` converts them (``rescale_state`` by 255), giving the same outputs.
"""
from __future__ import annotations

import os
import tempfile

import torch

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
    """``torch.save`` to a temp file in the same folder, fsync, then ``os.replace`` onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load a checkpoint written by ``atomic_save``; a corrupt file is named in the error."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"checkpoint: could not read {path!r} ({type(err).__name__}: {err})") from err
