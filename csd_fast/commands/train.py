"""``csd-fast train``: CSD training from a YAML/JSON config and/or flags (flags win).

Config keys are the flags' names with underscores (``lambda_c: 200``, ``train_hr: data/hr``,
``model_args: {n_feats: 64}``), the fields of ``csd_fast.TrainOptions``; every value is checked
(type and range) before anything is built, and an error names the file and the key. Writes into
``out``: ``config.json`` (the resolved options, when the run starts), ``checkpoint.pt``
(resumable), ``log.csv`` and TensorBoard scalars (when tensorboard is installed) during training,
then ``training.png`` and ``student.safetensors``.
Under ``torchrun`` every process trains its share of each global batch (DDP); rank 0 writes.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..options import TrainOptions, cli_defaults, names

def load_config(path) -> dict:
    """A YAML (.yaml/.yml) or JSON config file as a mapping (checked by ``TrainOptions.from_mapping``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config: {str(path)!r} is not a file")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ValueError(f"--config: {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"--config: {path} must hold a mapping of option: value, got {type(data).__name__}")
    return data


def parse_model_args(items) -> dict:
    """``["n_feats=64", "res_scale=0.1"]`` -> ``{"n_feats": 64, "res_scale": 0.1}`` (values parsed as YAML)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-arg: expected KEY=VALUE, got {item!r}")
        out[key.replace("-", "_")] = yaml.safe_load(value)
    return out


def resolve_options(args) -> TrainOptions:
    """Defaults, then the config file, then the flags given on the command line; checked once."""
    opts = cli_defaults()
    if getattr(args, "config", None):
        opts = TrainOptions.from_mapping(load_config(args.config), source=str(args.config), base=opts)
    given = {k: v for k, v in vars(args).items() if k in names()}
    if "model_args" in given:
        given["model_args"] = {**opts.model_args, **parse_model_args(given["model_args"])}
    opts = TrainOptions.from_mapping(given, source="the command line", base=opts)
    sources = [k for k in ("train_hr", "div2k", "bundled") if getattr(opts, k)]
    if len(sources) != 1:
        raise ValueError(f"training data: give exactly one of --train-hr DIR, --div2k ROOT, --bundled; got {sources or 'none'}")
    return opts


def _train_set(opts, scale: int):
    from ..data import DIV2K, HRFolder, PairedFolder, PatchDataset, bundled_images

    patch = opts.patch or 48 * scale
    if opts.bundled:
        return PatchDataset([hr for _, hr in bundled_images("train", max_side=opts.max_side)], scale, patch)
    files = dict(cache=opts.cache_dir or not opts.lazy_decode, strict=opts.strict, progress=not opts.quiet)
    if opts.div2k:
        return DIV2K(opts.div2k, "train", scale, patch, **files)
    if opts.train_lr:
        return PairedFolder(opts.train_hr, opts.train_lr, scale, patch, **files)
    return HRFolder(opts.train_hr, scale, patch, **files)


def _model(opts, device):
    from ..models import build_model
    from ..student_io import load_model

    if not opts.teacher:
        return build_model(opts.arch, scale=opts.scale or 4, preset=opts.preset, **opts.model_args)
    hints = {k: getattr(opts, k) for k in ("scale", "res_scale", "rgb_range") if getattr(opts, k) is not None}
    loaded = load_model(opts.teacher, device=device, **hints)
    if loaded.kind == "student":
        raise ValueError(f"--teacher: {opts.teacher} is an exported student; CSD needs the full teacher")
    if opts.scale is not None and loaded.model.scale != opts.scale:
        raise ValueError(f"--scale: the teacher {opts.teacher} is x{loaded.model.scale}, got --scale {opts.scale}")
    return loaded.model.train()


def run(args) -> int:
    import torch

    from .common import init_distributed, resolve_device

    opts = resolve_options(args)
    device = resolve_device(opts.device)
    created = init_distributed(device)
    try:
        _train(opts, device)
    finally:
        if created:
            torch.distributed.destroy_process_group()
    return 0


def _train(opts, device) -> None:
    import torch
    from torch.utils.data import ConcatDataset

    from ..plots import plot_training
    from ..student_io import save_student
    from ..trainer import CHECKPOINT_NAME, LOG_NAME, CSDTrainer
    from .common import eval_sets

    torch.manual_seed(opts.seed)
    model = _model(opts, device)
    scale = model.scale
    train_set = _train_set(opts, scale)
    val_sets = eval_sets(opts.val, scale, opts.data_root, opts.strict, opts.max_side)
    val_set = ConcatDataset([ds for _, ds in val_sets]) if val_sets else None
    trainer = CSDTrainer(model, opts, device=device)
    trainer.fit(train_set, val_set=val_set)
    if not trainer.is_main:
        return
    out = Path(opts.out)
    student = save_student(trainer.export(), out / "student.safetensors", width=trainer.width, source=str(out / CHECKPOINT_NAME))
    if (out / LOG_NAME).exists():
        plot_training(out / LOG_NAME, out / "training.png")
    if not opts.quiet:
        print(f"trained {trainer.step_count} steps; wrote {out / CHECKPOINT_NAME}, {student}, {out / 'training.png'}")
