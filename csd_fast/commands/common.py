"""Pieces shared by the subcommands: devices, distributed setup, evaluation sets, picking a network."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..models import SlimSRModel
from ..student_io import LoadedModel


def resolve_device(name: str | None) -> torch.device:
    """``auto``/None: CUDA if available, else CPU; under torchrun, CUDA means ``cuda:LOCAL_RANK``."""
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def init_distributed(device: torch.device) -> bool:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL on CUDA, gloo on CPU); returns
    whether this call created it (the caller then destroys it)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def eval_sets(names, scale: int, data_root=None, strict: bool = False, max_side: int | None = None):
    """``[(name, dataset)]`` of whole-image ``(lr, hr)`` sets: ``bundled`` (the held-out bundled
    photos), a benchmark name under ``data_root`` (Set5, Set14, B100, Urban100, Manga109), or a
    folder of HR images."""
    from ..data import BenchmarkSet, HRFolder, SRDataset, bundled_images

    sets = []
    for name in names:
        if name == "bundled":
            pairs = [(n, hr, None) for n, hr in bundled_images("test", max_side=max_side)]
            sets.append(("bundled", SRDataset(pairs, scale, None, False, progress=False)))
        elif Path(name).is_dir():
            sets.append((Path(name).name, HRFolder(name, scale, None, False, strict=strict, progress=False)))
        elif data_root is not None:
            ds = BenchmarkSet(data_root, name, scale, strict=strict)
            sets.append((ds.name, ds))
        else:
            raise ValueError(f"--data: {name!r} is neither 'bundled' nor a folder; benchmark names need --data-root DIR")
    return sets


def network_at(loaded: LoadedModel, width: float | None) -> tuple[SlimSRModel, float]:
    """The compact network to run and its width: a student file as it is; a checkpoint or teacher
    exported at ``width`` (default: the width recorded in the checkpoint, else 1.0)."""
    if loaded.kind == "student":
        if width not in (None, 1.0):
            raise ValueError(f"--width: the model file is an exported student (width {loaded.width}); "
                             f"it runs only as it is, got --width {width}")
        return loaded.model, loaded.width or 1.0
    width = width or loaded.width or 1.0
    return (loaded.model if width == 1.0 else loaded.model.export(width).eval()), width


def model_hints(args) -> dict:
    """Hints for foreign checkpoints (``csd_fast.convert``) from ``--scale``/``--res-scale``/``--rgb-range``."""
    names = ("scale", "res_scale", "rgb_range")
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


FAST_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def fast_options(args) -> dict | None:
    """``accelerate`` keyword arguments from ``--fast``, ``--dtype``, ``--no-cuda-graphs`` and the tile
    flags (the FastStudent tiles itself, in windows of one shape: one CUDA graph for a whole folder);
    None without ``--fast``, where the other two are refused."""
    if not args.fast:
        for flag, used in (("--dtype", args.dtype is not None), ("--no-cuda-graphs", args.no_cuda_graphs)):
            if used:
                raise ValueError(f"{flag}: only applies with --fast")
        return None
    return dict(dtype=FAST_DTYPES[args.dtype] if args.dtype else None, cuda_graphs=not args.no_cuda_graphs,
                tile=args.tile, tile_overlap=args.tile_overlap)


def accelerated(net: SlimSRModel, options: dict):
    """``csd_fast.accelerate(net, **options)``, or a clear error where the fast path cannot be imported."""
    try:
        from ..fast import accelerate
    except ImportError as err:
        raise ValueError(f"--fast: the fast path (csd_fast.fast) is not available here ({err}); run without --fast") from err
    return accelerate(net, **options)
