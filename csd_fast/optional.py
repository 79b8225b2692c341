"""Optional dependencies, imported where they are needed with a message saying how to install them.

The inference install (``pip install csd_fast``) needs torch, numpy, pillow, tqdm and safetensors
only; training extras (``pip install 'csd_fast[train]'``) add matplotlib (plots), pyyaml (config
files, ``--model-arg``) and scikit-image (the bundled photographs).
"""
from __future__ import annotations

from importlib import import_module

EXTRA = {"matplotlib": "train", "yaml": "train", "skimage": "train"}
PACKAGE = {"yaml": "pyyaml", "skimage": "scikit-image"}


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message names it, what needs it and the extra."""


def missing(name: str, purpose: str) -> MissingDependencyError:
    """The error for module ``name`` missing where ``purpose`` needs it."""
    package = PACKAGE.get(name, name)
    return MissingDependencyError(f"{purpose} needs {package}, which is not installed: pip install {package} "
                                  f"(or pip install 'csd_fast[{EXTRA.get(name, 'train')}]')")


def import_optional(name: str, purpose: str):
    """``import_module(name)``, or a :class:`MissingDependencyError` naming ``purpose``."""
    try:
        return import_module(name)
    except ImportError as err:
        raise missing(name, purpose) from err
