"""Build models by name: ``build_model("edsr", scale=4, preset="paper")``.

Presets are the sizes of the papers (``paper``: the CSD teachers), the common baselines, and a
``demo`` size small enough to train on two CPU cores in minutes.
"""
from __future__ import annotations

_REGISTRY: dict[str, type] = {}

PRESETS: dict[str, dict[str, dict]] = {
    "edsr": {
        "paper": dict(n_feats=256, n_resblocks=32, res_scale=0.1),
        "baseline": dict(n_feats=64, n_resblocks=16, res_scale=1.0),
        "demo": dict(n_feats=64, n_resblocks=4, res_scale=1.0),
    },
    "rcan": {
        "paper": dict(n_feats=64, n_resgroups=10, n_resblocks=20, reduction=16),
        "demo": dict(n_feats=32, n_resgroups=2, n_resblocks=2, reduction=8),
    },
    "carn": {
        "paper": dict(n_feats=64),
        "demo": dict(n_feats=32),
    },
}


def register_model(name: str):
    """Class decorator adding an architecture under ``name``; duplicate names are refused."""

    def add(cls):
        if name in _REGISTRY:
            raise ValueError(f"name: model {name!r} is already registered ({_REGISTRY[name].__name__})")
        _REGISTRY[name] = cls
        return cls

    return add


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def build_model(name: str, scale: int = 4, preset: str | None = "paper", **overrides):
    """An architecture by name at a preset size (None: the class defaults), with overrides."""
    if name not in _REGISTRY:
        raise ValueError(f"name: expected one of {model_names()}, got {name!r}")
    kwargs = {}
    if preset is not None:
        presets = PRESETS.get(name, {})
        if preset not in presets:
            raise ValueError(f"preset: expected one of {sorted(presets)} for {name!r}, got {preset!r}")
        kwargs.update(presets[preset])
    kwargs.update(overrides)
    return _REGISTRY[name](scale=scale, **kwargs)


def model_from_config(arch: str, config: dict):
    """Rebuild a model from its ``arch`` and ``config`` (as stored next to exported weights)."""
    if arch not in _REGISTRY:
        raise ValueError(f"arch: expected one of {model_names()}, got {arch!r}")
    return _REGISTRY[arch](**config)
