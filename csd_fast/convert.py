"""Teachers from other code bases: EDSR-PyTorch, BasicSR (EDSR, RCAN), official CARN, official CSD.

Spandrel style: canonicalize the wrapper (``params_ema``, ``params``, ``state_dict``, ``model``,
``module.`` prefixes), detect the format from the keys, infer the hyperparameters from tensor
shapes, map every key, and refuse any mismatch by name (missing, unexpected, wrong shape). Each
architecture declares the formats it loads in its folder (``csd_fast/models/<arch>/formats.py``).

Pixel range. EDSR-PyTorch and the official CSD code run on [0, 255] images (``rgb_range``), BasicSR
EDSR/RCAN scale [0, 1] input by ``img_range = 255`` inside, and csd_fast models compute on the same
8-bit scale (``SlimSRModel.img_range``): their parameters load unchanged. A checkpoint trained on
another range R (the original CARN: R = 1) is rescaled by ``f = img_range / R``
(``csd_fast.models.rescale_state``, each architecture's ``rescale``): conv + ReLU commute with
scaling, so every bias between the mean shifts is multiplied by ``f``; RCAN's channel attention
ends in a sigmoid, which does not commute, so its up-conv weight is divided by ``f``, its bias kept.

What shapes cannot tell: EDSR's ``res_scale`` (the official CSD code's default 0.1 for its files;
else 0.1 for 256+ features, the EDSR paper's large model, and 1.0 below; pass ``res_scale=``),
the pixel range (guessed from the mean shift's bias, range * mean; BasicSR's ``img_range`` 255;
pass ``rgb_range=``), BasicSR's RGB mean (not stored; DIV2K's) and the scale of a multi-scale CARN
checkpoint (pass ``scale=``). Every guess is reported in one warning naming the file.

The official CSD trainer's files (``{'epoch', 'model_state_dict', ...}`` with DataParallel's
``module.`` keys) load like the others: EDSR, RCAN (``csd-official-rcan``) and CARN
(``csd-official-carn``, into the ``carn-csd`` variant that reproduces that code's CARN).
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torch import Tensor

from .models import SlimSRModel, architectures, model_from_config, rescale_state
from .models.formats import CheckpointFormat

_WRAPPERS = ("params_ema", "params", "state_dict", "model_state_dict", "model", "net", "generator")
_MAX_LISTED = 20


def checkpoint_formats() -> list[tuple[str, CheckpointFormat]]:
    """``(arch, format)`` of every checkpoint format the registered architectures declare."""
    return [(arch.name, fmt) for arch in architectures() for fmt in arch.formats]


FORMATS = tuple(fmt.name for _, fmt in checkpoint_formats())


def canonicalize(obj) -> dict[str, Tensor]:
    """A flat ``{name: tensor}`` from a checkpoint object: unwraps known containers and ``module.``."""
    while isinstance(obj, dict):
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            raise ValueError(f"state dict: found no tensors and none of the wrappers {_WRAPPERS}; got keys {sorted(obj)[:10]}")
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"state dict: expected a non-empty dict of tensors, got {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        while key.startswith("module."):
            key = key[len("module."):]
        out[key] = value
    return out


def _detect(sd: dict[str, Tensor]) -> tuple[str, CheckpointFormat]:
    keys = set(sd)
    for arch, fmt in checkpoint_formats():
        if fmt.detect(keys):
            return arch, fmt
    raise ValueError(f"state dict: unrecognized architecture (expected one of {FORMATS}); first keys: {sorted(keys)[:8]}")


def detect_format(sd: dict[str, Tensor]) -> str:
    """The source code base of a canonical state dict, one of ``FORMATS``."""
    return _detect(sd)[1].name


def _their_key(ours: str, rules) -> str:
    for pattern, repl in rules:
        theirs, n = re.subn("^" + pattern, repl, ours, count=1)
        if n:
            return theirs
    return ours


def _listing(names: list[str]) -> str:
    more = f" ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more


def load_teacher_state(obj, source: str = "state dict", scale: int | None = None, res_scale: float | None = None,
                       rgb_range: float | None = None) -> tuple[str, dict, dict[str, Tensor], str]:
    """Map a foreign checkpoint onto csd_fast: returns ``(arch, config, state_dict, format)``.

    ``obj``: a loaded checkpoint (any wrapper). ``scale``/``res_scale``/``rgb_range`` override what
    cannot be read off the shapes (module docstring). Raises ``ValueError`` listing every missing,
    unexpected and shape-mismatched key by its name in the checkpoint.
    """
    sd = canonicalize(obj)
    arch, form = _detect(sd)
    fmt = form.name
    plan = form.plan(sd, scale, res_scale, rgb_range)
    config, rules, rng, consumed = plan.config, plan.rules, plan.rgb_range, plan.consumed
    if plan.guessed:
        warnings.warn(f"{source}: the {fmt} format does not store these; guessed {'; '.join(plan.guessed)}", stacklevel=2)
    if scale is not None and config["scale"] != scale:
        raise ValueError(f"scale: {source} is a x{config['scale']} {fmt} model, got scale={scale}")
    with torch.device("meta"):
        expected = model_from_config(arch, config).state_dict()
    mapping = {ours: _their_key(ours, rules) for ours in expected if ours != "mean_shift.mean"}
    missing = [t for t in mapping.values() if t not in sd]
    known = set(mapping.values()) | set(consumed)
    unexpected = [k for k in sd if k not in known]
    wrong = [f"{t} {tuple(sd[t].shape)} (expected {tuple(expected[o].shape)})"
             for o, t in mapping.items() if t in sd and sd[t].shape != expected[o].shape]
    if missing or unexpected or wrong:
        parts = [f"{name}: {_listing(keys)}" for name, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)) if keys]
        raise ValueError(f"{source}: does not match a {fmt} {arch} with {config}; " + "; ".join(parts))
    out = {ours: sd[theirs].detach().float().cpu() for ours, theirs in mapping.items()}
    out = rescale_state(arch, out, SlimSRModel.img_range / rng)
    out["mean_shift.mean"] = torch.tensor(config["rgb_mean"], dtype=torch.float32).view(1, 3, 1, 1)
    return arch, config, out, fmt


def load_teacher(path_or_obj, source: str | None = None, **hints) -> tuple[SlimSRModel, str]:
    """A csd_fast model (the teacher, width 1.0) from a foreign checkpoint file or object; returns ``(model, format)``.

    Files: ``.safetensors``, or a torch pickle read with ``weights_only=True``.
    """
    obj = path_or_obj
    if isinstance(path_or_obj, (str, Path)):
        source = source or str(path_or_obj)
        if str(path_or_obj).endswith(".safetensors"):
            from safetensors.torch import load_file

            obj = load_file(str(path_or_obj))
        else:
            try:
                obj = torch.load(path_or_obj, map_location="cpu", weights_only=True)
            except FileNotFoundError:
                raise
            except Exception as err:
                raise ValueError(f"{source}: could not read the checkpoint ({type(err).__name__}: {err})") from err
    arch, config, sd, fmt = load_teacher_state(obj, source=source or "state dict", **hints)
    model = model_from_config(arch, config)
    model.load_state_dict(sd)
    return model, fmt
