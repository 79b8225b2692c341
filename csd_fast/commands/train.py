"""``csd-fast train``: CSD training from a YAML/JSON config and/or flags (flags win).

Config keys are the flags' names with underscores (``lambda_c: 200``, ``train_hr: data/hr``,
``model_args: {n_feats: 64}``), the fields of ``csd_fast.TrainOptions``; every value is checked
(type and range) before anything is built, and an error names the file and the key. Writes into
``out``: ``config.json`` (the resolved options, when the run starts), ``checkpoint.pt``
(resumable), ``log.csv`` and TensorBoard scalars (when tensorboard is installed) during training,
then ``training.png`` and ``student.safetensors``.
Under ``torchrun`` every process trains its share of each global batch (DDP); rank 0 writes.

``out`` is locked while the run is alive (``csd_fast.fileio.lock_run_dir``: a second run into it
fails at once) and must be empty unless ``resume`` (continue its checkpoint) or ``overwrite``
(delete the previous run's files, listed in ``RUN_FILES``, then start afresh) is given.
``bundled`` without an explicit ``preset``/``steps`` trains the small demo size
(``BUNDLED_DEFAULTS``), not the paper's 43M-parameter EDSR for 300k steps.

``method: dckd`` trains as ``csd_fast.KDTrainer``: ``teacher`` (any model file) is the frozen
teacher, the student is built from ``arch``/``preset``/``model_args`` at the teacher's scale, and
the options not given take ``KDTrainer``'s defaults (read off its signature: dynamic negatives,
width 1.0, Adam betas 0.9/0.99, a constant rate, the DCKD weights).
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

from ..fileio import check_writable_dir, is_internal_file, lock_run_dir, unlock_run_dir
from ..optional import import_optional
from ..options import TrainOptions, cli_defaults, names

BUNDLED_DEFAULTS = dict(preset="demo", steps=2000)
RUN_FILES = ("checkpoint.pt", "log.csv", "training.png", "student.safetensors", "student.json", "config.json", "tensorboard")


def load_config(path) -> dict:
    """A YAML (.yaml/.yml) or JSON config file as a mapping (checked by ``TrainOptions.from_mapping``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config: {str(path)!r} is not a file")
    text = path.read_text()
    if path.suffix == ".json":
        parse, errors = json.loads, (ValueError,)
    else:
        yaml = import_optional("yaml", "a YAML --config")
        parse, errors = yaml.safe_load, (yaml.YAMLError,)
    try:
        data = parse(text)
    except errors as err:
        raise ValueError(f"--config: {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"--config: {path} must hold a mapping of option: value, got {type(data).__name__}")
    return data


def parse_model_args(items) -> dict:
    """``["n_feats=64", "res_scale=0.1"]`` -> ``{"n_feats": 64, "res_scale": 0.1}`` (values parsed as YAML)."""
    yaml = import_optional("yaml", "--model-arg")
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
    config = load_config(args.config) if getattr(args, "config", None) else {}
    if config:
        opts = TrainOptions.from_mapping(config, source=str(args.config), base=opts)
    given = {k: v for k, v in vars(args).items() if k in names()}
    if "model_args" in given:
        given["model_args"] = {**opts.model_args, **parse_model_args(given["model_args"])}
    opts = TrainOptions.from_mapping(given, source="the command line", base=opts)
    explicit = {str(k).replace("-", "_") for k in config} | set(given)
    if opts.bundled:
        opts = TrainOptions.from_mapping({k: v for k, v in BUNDLED_DEFAULTS.items() if k not in explicit},
                                         source="--bundled", base=opts)
    if opts.method == "dckd":
        opts = _dckd_options(opts, explicit)
    if opts.resume and opts.overwrite:
        raise ValueError("--resume and --overwrite: give one (continue the run in --out, or replace it)")
    sources = [k for k in ("train_hr", "div2k", "bundled") if getattr(opts, k)]
    if len(sources) != 1:
        raise ValueError(f"training data: give exactly one of --train-hr DIR, --div2k ROOT, --bundled; got {sources or 'none'}")
    return opts


def _kd_option_names() -> list[str]:
    """The ``TrainOptions`` fields that ``KDTrainer`` takes as arguments (with its own DCKD defaults)."""
    from ..kd import KDTrainer

    return [n for n, p in inspect.signature(KDTrainer).parameters.items() if n in names() and p.default is not p.empty]


def _dckd_options(opts: TrainOptions, explicit: set) -> TrainOptions:
    """``method: dckd``: ``KDTrainer``'s defaults for the options not given; ``teacher`` required, ``lambda_t`` refused."""
    from ..kd import KDTrainer

    if not opts.teacher:
        raise ValueError("--teacher: --method dckd distils a frozen teacher; expected its model file, got none")
    if "lambda_t" in explicit:
        raise ValueError(f"--lambda-t: not used by --method dckd (the frozen teacher has no loss), got {opts.lambda_t}")
    defaults = inspect.signature(KDTrainer).parameters
    return TrainOptions.from_mapping({n: defaults[n].default for n in _kd_option_names() if n not in explicit},
                                     source="--method dckd", base=opts)


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


def _teacher_file(opts, device):
    """``opts.teacher`` loaded (``csd_fast.student_io.load_model``, with the foreign-file hints), at ``scale`` if given."""
    from ..student_io import load_model

    hints = {k: getattr(opts, k) for k in ("scale", "res_scale", "rgb_range") if getattr(opts, k) is not None}
    loaded = load_model(opts.teacher, device=device, **hints)
    if opts.scale is not None and loaded.model.scale != opts.scale:
        raise ValueError(f"--scale: the teacher {opts.teacher} is x{loaded.model.scale}, got --scale {opts.scale}")
    return loaded


def _model(opts, device):
    from ..models import build_model

    if not opts.teacher:
        return build_model(opts.arch, scale=opts.scale or 4, preset=opts.preset, **opts.model_args)
    loaded = _teacher_file(opts, device)
    if loaded.kind == "student":
        raise ValueError(f"--teacher: {opts.teacher} is an exported student; CSD needs the full teacher")
    return loaded.model.train()


def _networks(opts, device):
    """``(frozen teacher, trained model)``: for csd no teacher and the shared model (``_model``); for dckd the
    teacher file and a new student from ``arch``/``preset``/``model_args`` at its scale."""
    import torch

    from ..models import build_model

    if opts.method == "csd":
        return None, _model(opts, device)
    teacher = _teacher_file(opts, device).model
    torch.manual_seed(opts.seed)  # the student's initial weights
    return teacher, build_model(opts.arch, scale=teacher.scale, preset=opts.preset, **opts.model_args)


def prepare_out(opts) -> Path:
    """Lock ``out`` for this run and check it holds no other run (see the module docstring)."""
    import shutil

    out = lock_run_dir(check_writable_dir(opts.out, "--out"))
    found = sorted(p.name for p in out.iterdir() if not is_internal_file(p.name))
    if opts.overwrite:
        for name in set(found) & set(RUN_FILES):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
            else:
                (out / name).unlink()
    elif found and not opts.resume:
        unlock_run_dir(out)
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise ValueError(f"--out: {out} is not empty ({shown}); pass --resume to continue the run there, "
                         "--overwrite to replace it, or choose another folder")
    return out


def run(args) -> int:
    import os

    import torch

    from .common import init_distributed, resolve_device

    opts = resolve_options(args)
    device = resolve_device(opts.device)
    import_optional("matplotlib", "train (it draws OUT/training.png)")  # before the work, not after it
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        prepare_out(opts)
    created = init_distributed(device)
    try:
        _train(opts, device)
    finally:
        if created:
            torch.distributed.destroy_process_group()
        if main:
            unlock_run_dir(opts.out)
    return 0


def _train(opts, device) -> None:
    import torch
    from torch.utils.data import ConcatDataset

    from ..kd import KDTrainer
    from ..plots import plot_training
    from ..student_io import save_student
    from ..trainer import CHECKPOINT_NAME, LOG_NAME, CSDTrainer
    from .common import eval_sets

    torch.manual_seed(opts.seed)
    teacher, model = _networks(opts, device)
    scale = model.scale
    train_set = _train_set(opts, scale)
    val_sets = eval_sets(opts.val, scale, opts.data_root, opts.strict, opts.max_side)
    val_set = ConcatDataset([ds for _, ds in val_sets]) if val_sets else None
    if teacher is None:
        trainer = CSDTrainer(model, opts, device=device)
    else:
        trainer = KDTrainer(teacher, model, options=opts, device=device, **{n: getattr(opts, n) for n in _kd_option_names()})
    trainer.fit(train_set, val_set=val_set)
    if not trainer.is_main:
        return
    out = Path(opts.out)
    student = save_student(trainer.export(), out / "student.safetensors", width=trainer.width, source=str(out / CHECKPOINT_NAME))
    if (out / LOG_NAME).exists():
        plot_training(out / LOG_NAME, out / "training.png")
    if not opts.quiet:
        print(f"trained {trainer.step_count} steps; wrote {out / CHECKPOINT_NAME}, {student}, {out / 'training.png'}")
