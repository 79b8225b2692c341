"""Model files: a compact student in one safetensors file, and loading any model file the CLI accepts.

A student file holds the weights plus, in its safetensors metadata under ``"csd_fast"``, a JSON
``{"format_version": 2, "arch", "config", "width", "source"}``: enough to rebuild it with
``model_from_config`` and no teacher. ``save_student`` also writes that JSON beside it
(``student.json``) for people and tools that do not read safetensors metadata. Files of format 1
(``"format": 1``, [0, 1]-unit parameters) are converted on load (``csd_fast.checkpoint``).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint import FORMAT_VERSION, model_state_from_file
from .models import SlimSRModel, check_width, get_arch, model_from_config

META_KEY = "csd_fast"


def _json_config(config: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def save_student(model: SlimSRModel, path, width: float | None = None, source: str | None = None) -> Path:
    """Write ``model`` (a compact student, e.g. ``teacher.export(0.25)``) to ``path`` (.safetensors).

    ``width``/``source`` are recorded for information (the width it was cut at, the checkpoint it
    came from). Written atomically; returns the path. The JSON sidecar goes to ``path`` with
    suffix ``.json``.
    """
    from safetensors.torch import save_file

    if not isinstance(model, SlimSRModel):
        raise TypeError(f"model: expected a csd_fast slim model (e.g. teacher.export(width)), got {type(model).__name__}")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"path: expected a file name ending in .safetensors, got {str(path)!r}")
    info = {"format_version": FORMAT_VERSION, "arch": model.arch, "config": _json_config(model.config), "width": width, "source": source}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(info)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return path


def student_at(model: SlimSRModel, width: float | None) -> SlimSRModel:
    """The compact student of ``model`` at ``width`` (None or 1.0: ``model`` itself). Refuses another
    width for an exported student (``model.export(w)`` or ``load_student``): it has only its own."""
    if width is None:
        return model
    width = check_width(width)
    exported = getattr(model, "export_info", None)
    if exported is not None and width != 1.0:
        raise ValueError(f"width: the model is an exported student (cut at width {exported.get('width')} of its "
                         f"teacher) and runs only at width 1.0, got {width}; pass the full model to run another width")
    return model if width == 1.0 else model.export(width)


def read_student_info(path) -> dict | None:
    """The ``csd_fast`` metadata of a safetensors file, or None when it has none (a foreign file)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:
        raise ValueError(f"{path}: not a readable safetensors file ({type(err).__name__}: {err})") from err
    return json.loads(meta[META_KEY]) if META_KEY in meta else None


def load_student(path, device="cpu") -> SlimSRModel:
    """Rebuild a student written by ``save_student``, in eval mode (no teacher needed)."""
    from safetensors.torch import load_file

    info = read_student_info(path)
    if info is None:
        raise ValueError(f"{path}: no {META_KEY!r} metadata; expected a file written by csd_fast.save_student")
    version = info.get("format_version", info.get("format"))
    try:
        state = model_state_from_file(load_file(str(path)), version, info["arch"])
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    model = model_from_config(info["arch"], info["config"])
    model.load_state_dict(state)
    model.export_info = {"width": info.get("width"), "source": info.get("source")}
    return model.to(device).eval()


@dataclass(frozen=True)
class StudentDescriptor:
    """What a student is and how to run it (as spandrel's model descriptors): ``arch``, ``scale``,
    ``width`` it was cut at (None: unknown), ``channels`` (feature channels), ``params``, ``dtypes``
    the fast path runs (``csd_fast.accelerate``), ``tile_overlap``: the receptive-field radius in LR
    pixels, the overlap that makes tiled inference equal one pass when ``tiling == "exact"``
    (``"approximate"``: a global operation sees only its tile), and the model ``config``."""

    arch: str
    scale: int
    width: float | None
    channels: int
    params: int
    dtypes: tuple
    tile_overlap: int
    tiling: str
    config: dict


def describe_student(student) -> StudentDescriptor:
    """The :class:`StudentDescriptor` of a student file (``save_student``; reads no weights) or model."""
    if isinstance(student, SlimSRModel):
        model, width = student, (getattr(student, "export_info", None) or {}).get("width")
    else:
        info = read_student_info(student)
        if info is None:
            raise ValueError(f"{student}: no {META_KEY!r} metadata; expected a file written by csd_fast.save_student")
        with torch.device("meta"):
            model = model_from_config(info["arch"], info["config"])
        width = info.get("width")
    arch = get_arch(model.arch, "arch")
    return StudentDescriptor(
        arch=model.arch, scale=model.scale, width=width, channels=model.head.out_channels,
        params=sum(p.numel() for p in model.parameters()), dtypes=arch.dtypes,
        tile_overlap=math.ceil(_receptive_radius(model)), tiling=arch.tiling, config=dict(model.config),
    )


def _receptive_radius(model: SlimSRModel) -> float:
    """LR pixels of context one output pixel depends on: ``k // 2`` per conv, divided by the upscaling
    done before it (the upsampler's stages and the tail run on upscaled features)."""
    upscaled = {id(model.tail): model.scale}
    done = 1
    for conv, f in zip(model.upsampler.convs, model.upsampler.factors):
        upscaled[id(conv)] = done
        done *= f
    return sum((m.kernel_size[0] // 2) / upscaled.get(id(m), 1) for m in model.modules() if isinstance(m, nn.Conv2d))


@dataclass
class LoadedModel:
    """A model read by ``load_model``: ``kind`` is "checkpoint", "student" or the foreign format's name;
    ``width`` is the student width the file records (None: unknown); ``info`` holds the rest."""

    model: SlimSRModel
    kind: str
    width: float | None
    info: dict = field(default_factory=dict)


def load_model(path, device="cpu", **hints) -> LoadedModel:
    """Any model file the CLI accepts: a CSDTrainer ``checkpoint.pt``, a ``save_student`` file, or a
    foreign EDSR/RCAN/CARN/official-CSD state dict (see ``csd_fast.convert``; ``hints`` go there)."""
    from .checkpoint import load_checkpoint
    from .convert import load_teacher

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model: {str(path)!r} is not a file (expected checkpoint.pt, a .safetensors student or a state dict)")
    if path.suffix == ".safetensors":
        info = read_student_info(path)
        if info is not None:
            return LoadedModel(load_student(path, device), "student", info.get("width"), info)
        teacher, fmt = load_teacher(path, **hints)
        return LoadedModel(teacher.to(device).eval(), fmt, None)
    obj = load_checkpoint(str(path))
    if isinstance(obj, dict) and {"arch", "model_config", "model"} <= set(obj):
        model = model_from_config(obj["arch"], dict(obj["model_config"]))
        try:
            model.load_state_dict(model_state_from_file(obj["model"], obj.get("format_version"), obj["arch"]))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        info = {"step": obj.get("step"), "history": obj.get("history", [])}
        return LoadedModel(model.to(device).eval(), "checkpoint", obj.get("width"), info)
    teacher, fmt = load_teacher(obj, source=str(path), **hints)
    return LoadedModel(teacher.to(device).eval(), fmt, None)
