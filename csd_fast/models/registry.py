"""One entry per architecture: ``build_model("edsr", scale=4, preset="paper")`` and everything else.

Everything csd_fast knows about an architecture lives in its folder (``csd_fast/models/<name>/``)
and is registered here once as an :class:`Architecture`: the model class, its preset sizes, the
foreign checkpoint formats it loads (``csd_fast.convert``), its fast-path plan (``csd_fast.fast``)
and the dtypes that plan supports. Adding an architecture is one new folder plus its import in
``csd_fast/models/__init__.py``.

Presets are the sizes of the papers (``paper``: the CSD teachers), the common baselines, and a
``demo`` size small enough to train on two CPU cores in minutes.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from .base import scale_biases

FAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Architecture:
    """What csd_fast knows about one architecture.

    ``model``: the :class:`~csd_fast.models.SlimSRModel` subclass; ``presets``: ``{preset: kwargs}``;
    ``formats``: the :class:`~csd_fast.models.formats.CheckpointFormat` of each foreign code base
    whose checkpoints load into it; ``plan``: the fast path, a class ``plan(student, backend)``
    with ``run(x, out)`` over the backend protocol of ``csd_fast.backends`` (None: no fast path);
    ``dtypes``: the compute dtypes of that plan; ``tiling``: ``"exact"`` when tiles with an overlap of
    the receptive field give the one-pass result, ``"approximate"`` when a global operation sees only
    its tile (RCAN's channel attention). ``rescale(key, tensor, factor)``: a parameter after the
    network's internal pixel scale is multiplied by ``factor`` (the same function; used to load
    checkpoints of another pixel range and files of csd_fast's [0, 1]-unit format 1).
    """

    name: str
    model: type
    presets: Mapping[str, dict] = field(default_factory=dict)
    formats: tuple = ()
    plan: Optional[Callable[..., Any]] = None
    dtypes: tuple = ()
    tiling: str = "exact"
    rescale: Callable[..., Any] = scale_biases


_REGISTRY: dict[str, Architecture] = {}


def register_arch(arch: Architecture) -> Architecture:
    """Add ``arch`` under ``arch.name``; duplicate names are refused."""
    if (arch.plan is None) != (not arch.dtypes):
        raise ValueError(f"dtypes: expected the dtypes of {arch.name!r}'s fast-path plan (and none without one), got {arch.dtypes!r}")
    if arch.name in _REGISTRY:
        raise ValueError(f"name: model {arch.name!r} is already registered ({_REGISTRY[arch.name].model.__name__})")
    _REGISTRY[arch.name] = arch
    return arch


def register_model(name: str):
    """Class decorator registering a bare architecture (a model class, no presets, formats or fast path)."""

    def add(cls):
        register_arch(Architecture(name, cls))
        return cls

    return add


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def architectures() -> list[Architecture]:
    """Every registered architecture, by name."""
    return [_REGISTRY[name] for name in model_names()]


def get_arch(name: str, argument: str = "name") -> Architecture:
    """The registered architecture ``name``; ``ValueError`` naming ``argument`` when there is none."""
    if name not in _REGISTRY:
        raise ValueError(f"{argument}: expected one of {model_names()}, got {name!r}")
    return _REGISTRY[name]


class _FieldView(Mapping):
    """Read-only ``{name: getattr(arch, attr)}`` over the architectures where ``attr`` is set."""

    def __init__(self, attr: str):
        self._attr = attr

    def __getitem__(self, name):
        value = getattr(_REGISTRY[name], self._attr) if name in _REGISTRY else None
        if not value:
            raise KeyError(name)
        return value

    def __iter__(self):
        return (a.name for a in architectures() if getattr(a, self._attr))

    def __len__(self):
        return sum(1 for _ in self)

    def __repr__(self):
        return repr(dict(self))


PRESETS: Mapping[str, Mapping[str, dict]] = _FieldView("presets")
SUPPORTED_DTYPES: Mapping[str, tuple] = _FieldView("dtypes")  # the architectures with a fast path


def build_model(name: str, scale: int = 4, preset: str | None = "paper", **overrides):
    """An architecture by name at a preset size (None: the class defaults), with overrides."""
    arch = get_arch(name)
    kwargs = {}
    if preset is not None:
        if preset not in arch.presets:
            raise ValueError(f"preset: expected one of {sorted(arch.presets)} for {name!r}, got {preset!r}")
        kwargs.update(arch.presets[preset])
    kwargs.update(overrides)
    return arch.model(scale=scale, **kwargs)


def rescale_state(arch: str, state: dict, factor: float) -> dict:
    """``state`` of architecture ``arch`` after its internal pixel scale is multiplied by ``factor``."""
    if factor == 1.0:
        return dict(state)
    rescale = get_arch(arch, "arch").rescale
    return {key: rescale(key, t, factor) for key, t in state.items()}


def model_from_config(arch: str, config: dict):
    """Rebuild a model from its ``arch`` and ``config`` (as stored next to exported weights)."""
    return get_arch(arch, "arch").model(**config)
