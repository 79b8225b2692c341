"""The options of a CSD training run, listed once: ``TrainOptions``.

One dataclass serves the Python API (``CSDTrainer(model, width=..., ...)``), the command line
(``csd-fast train`` builds its flags from the fields) and config files (YAML/JSON keys are the field
names). Every field carries its type, range and help in its metadata, and ``TrainOptions.check``
validates all of them once, before any model is built, naming the field (and the config file).

Numbers given as strings (PyYAML reads ``lr: 1e-4`` as a string) are accepted for float fields
when they parse as one; other mismatches (``batch: "4"``, ``bundled: "false"``) are refused.

``resume`` check: a checkpoint records the fields marked ``checked``; resuming with different
values is refused, naming them, unless they are listed in ``allow_changed``. The other fields
(``steps``, ``max_minutes``, output and logging options) may change freely between runs.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from .models import model_names

NEGATIVE_KINDS = ("official", "others", "self-blur", "dynamic")
REDUCTIONS = ("batch", "sample")
VGG_INPUTS = ("official", "imagenet")
METHODS = ("csd", "dckd")
DCKD_ONLY = ("lambda_kd", "lambda_aug", "aug_prob")  # options of method "dckd" (csd_fast.KDTrainer) alone


def _opt(default, kind, help, *, low=None, high=None, low_open=False, high_open=False, choices=None, none=False, checked=False,
         group="optimization and output", cli=True, cli_default=None, item=None, length=None):
    """A dataclass field with its validation rule and CLI help in the metadata."""
    meta = dict(kind=kind, help=help, low=low, high=high, low_open=low_open, high_open=high_open, choices=choices, none=none,
                checked=checked, group=group, cli=cli, cli_default=cli_default, item=item, length=length)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainOptions:
    # model (the CLI builds the model; the Python API gets a built one)
    arch: str = _opt("edsr", str, "architecture (csd_fast.models.model_names())", choices=model_names, group="model")
    preset: str = _opt("paper", str, "size preset: paper, baseline (EDSR), demo", none=True, group="model")
    model_args: dict = _opt({}, dict, "override a model argument, e.g. n_feats=64 (repeatable flag; a mapping in config files)", group="model")
    scale: int = _opt(None, int, "upscaling factor 2, 3 or 4 (default 4, or the --teacher's)", choices=(2, 3, 4),
                      none=True, group="model")
    width: float = _opt(0.25, float, "student width r in (0, 1]", low=0.0, low_open=True, high=1.0, checked=True,
                        group="model")
    teacher: str = _opt(None, str, "start from this teacher file (checkpoint.pt or a foreign EDSR/RCAN/CARN/CSD "
                        "state dict) instead of --arch", none=True, group="model")
    res_scale: float = _opt(None, float, "EDSR res_scale of a foreign --teacher (see csd_fast.convert)", low=0.0,
                            low_open=True, none=True, group="model")
    rgb_range: float = _opt(None, float, "pixel range of a foreign --teacher (see csd_fast.convert)", low=0.0,
                            low_open=True, none=True, group="model")
    # loss
    neg_num: int = _opt(None, int, "negatives K (default 10; 5 for --negatives dynamic)", low=1, none=True,
                        checked=True, group="loss")
    negatives: str = _opt("official", str, "how negatives are made (official: K bicubic-upsampled LR images of the "
                          "batch, the same for every anchor)", choices=NEGATIVE_KINDS, checked=True, group="loss")
    lambda_t: float = _opt(1.0, float, "weight of the teacher's L1", low=0.0, checked=True, group="loss")
    lambda_c: float = _opt(None, float, "weight of the contrastive loss (default 200; 25.5 for dynamic)", low=0.0,
                           none=True, checked=True, group="loss")
    reduction: str = _opt("batch", str, "contrastive means over the batch (official) or per-sample ratios (paper "
                          "Eq. 2)", choices=REDUCTIONS, checked=True, group="loss")
    vgg_input: str = _opt("official", str, "VGG19 input: official (8-bit RGB, no normalization) or imagenet "
                          "(ImageNet mean/std)", choices=VGG_INPUTS, checked=True, group="loss")
    vgg_weights: str = _opt(None, str, "torchvision vgg19-dcbb9e9d.pth; without it a random VGG is used, with a "
                            "warning", none=True, checked=True, group="loss")
    pixel_range: float = _opt(255.0, float, "the L1 terms are on this pixel scale (official: 255)", low=0.0,
                              low_open=True, checked=True, group="loss")
    # data
    bundled: bool = _opt(False, bool, "train on the bundled photographs (no download); unless given, --preset demo "
                         "and --steps 2000", group="data")
    train_hr: str = _opt(None, str, "folder of HR training images (LR made by MATLAB bicubic)", none=True, group="data")
    train_lr: str = _opt(None, str, "matching LR folder for --train-hr (optional)", none=True, group="data")
    div2k: str = _opt(None, str, "DIV2K root holding DIV2K_train_HR/ (and DIV2K_train_LR_bicubic/)", none=True,
                      group="data")
    val: list = _opt([], list, "validation sets: bundled, a folder, or Set5/Set14/B100/Urban100/Manga109 under "
                     "--data-root", item=str, group="data")
    data_root: str = _opt(None, str, "folder holding the benchmark sets", none=True, group="data")
    patch: int = _opt(None, int, "HR patch side (default 48*scale, the paper's 48 LR pixels)", low=1, none=True,
                      checked=True, group="data")
    max_side: int = _opt(None, int, "shrink bundled photos to this longer side (faster)", low=1, none=True,
                         group="data")
    strict: bool = _opt(False, bool, "stop on a corrupt image file instead of skipping it", group="data")
    workers: int = _opt(0, int, "DataLoader worker processes reading the training images (the batches do not "
                        "depend on it)", low=0, group="data")
    lazy_decode: bool = _opt(False, bool, "decode training files per item instead of holding them decoded in memory "
                             "(for sets larger than RAM)", group="data")
    cache_dir: str = _opt(None, str, "decode each training file once into DIR (uint8 .npy, memory-mapped per patch) "
                          "instead of holding them in memory", none=True, group="data")
    # optimization and output
    steps: int = _opt(300_000, int, "optimizer steps", low=1)
    batch: int = _opt(16, int, "global batch size", low=1, checked=True)
    lr: float = _opt(1e-4, float, "Adam learning rate", low=0.0, low_open=True, checked=True)
    betas: list = _opt([0.9, 0.999], list, "Adam betas", item=float, length=2, low=0.0, high=1.0,
                   high_open=True, checked=True)
    lr_milestones: list = _opt([0.5], list, "steps where the rate is multiplied by lr_gamma: a value < 1 is a "
                               "fraction of --steps (fixed when the run starts), >= 1 a step number", item=float,
                               low=0.0, low_open=True, checked=True)
    lr_gamma: float = _opt(0.1, float, "rate factor at each milestone (official: 0.1 at half of the run)", low=0.0,
                           low_open=True, checked=True)
    seed: int = _opt(0, int, "seed of the initial weights and of every step", low=0, checked=True)
    max_minutes: float = _opt(None, float, "stop (with a checkpoint) after this much time", low=0.0, low_open=True,
                              none=True)
    val_every: int = _opt(None, int, "validate every N steps (default steps/4)", low=1, none=True)
    checkpoint_every: int = _opt(500, int, "checkpoint every N steps", low=1)
    out: str = _opt(None, str, "output folder (Python: None writes nothing)", none=True, cli_default="runs/train")
    resume: bool = _opt(False, bool, "continue from OUT/checkpoint.pt if it exists (else a non-empty OUT is refused)")
    overwrite: bool = _opt(False, bool, "delete the previous run's files in OUT (checkpoint, log, student, plots) "
                           "and start afresh")
    allow_changed: list = _opt([], list, "checked options that may differ from the checkpoint's on --resume",
                               item=str)
    device: str = _opt("auto", str, "cpu, cuda, cuda:1, ... (default: cuda if available)")
    quiet: bool = _opt(False, bool, "no progress bars")
    dynamic_options: dict = _opt(None, dict, "DynamicNegatives options (negatives='dynamic')", none=True,
                                 checked=True, cli=False)
    # method: CSD (one shared model) or DCKD (a frozen teacher and a separate student, csd_fast.KDTrainer)
    method: str = _opt("csd", str, "csd: train a teacher and its channel-split student jointly; dckd: distil the "
                       "frozen --teacher into a separate student built from --arch/--preset/--model-arg (DCKD, "
                       "csd_fast.KDTrainer, whose defaults the options not given take: --negatives dynamic, --width 1.0, "
                       "--betas 0.9 0.99, --lr-gamma 1)", choices=METHODS, checked=True, group="method")
    lambda_kd: float = _opt(None, float, "dckd: weight of L1(student, teacher) (default 1.0)", low=0.0, none=True,
                            checked=True, group="method")
    lambda_aug: float = _opt(None, float, "dckd: weight of the teacher-augmentation term L1(S, A^-1(T(A(LR)))) "
                             "(default 1.0, every official config; 0 turns it off)", low=0.0, none=True, checked=True,
                             group="method")
    aug_prob: float = _opt(None, float, "dckd: probability of each augmentation in A (colour inversion, row flip, "
                           "column flip, transpose), per image (default 0.5)", low=0.0, high=1.0, none=True,
                           checked=True, group="method")

    def check(self, source: str | None = None) -> "TrainOptions":
        """Validate (and normalize: numeric strings to floats, ints to floats) every field; returns self.

        Raises ValueError/TypeError naming the field, and ``source`` (a config file) when given.
        """
        where = f" in {source}" if source else ""
        for f in fields(self):
            setattr(self, f.name, _checked(f.name, getattr(self, f.name), f.metadata, where))
        steps = [m for m in self.lr_milestones if m >= 1 and m != int(m)]
        if steps:
            raise ValueError(f"lr_milestones{where}: expected fractions < 1 or whole step numbers, got {steps}")
        if self.allow_changed:
            bad = sorted(set(self.allow_changed) - set(checked_names()))
            if bad:
                raise ValueError(f"allow_changed{where}: expected names among {checked_names()}, got {bad}")
        given = [name for name in DCKD_ONLY if getattr(self, name) is not None]
        if self.method != "dckd" and given:
            raise ValueError(f"{given[0]}{where}: only applies with method 'dckd', got {getattr(self, given[0])!r} "
                             f"with method {self.method!r}")
        return self

    @classmethod
    def from_mapping(cls, data: dict, source: str, base: "TrainOptions | None" = None) -> "TrainOptions":
        """Options from a config mapping (keys: field names, '-' or '_'), over ``base``; checked."""
        known = names()
        values = {}
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise ValueError(f"{source}: unknown key {key!r}; expected one of {sorted(known)}")
            values[name] = value
        return replace(base or cls(), **values).check(source)

    def checked_values(self) -> dict:
        """The fields a resumed run must share with its checkpoint."""
        return {name: _plain(getattr(self, name)) for name in checked_names()}

    def to_dict(self) -> dict:
        return {k: _plain(v) for k, v in asdict(self).items()}


def names() -> set[str]:
    return {f.name for f in fields(TrainOptions)}


def checked_names() -> list[str]:
    return [f.name for f in fields(TrainOptions) if f.metadata["checked"]]


def option_default(name: str, cli: bool = False):
    """A field's default (``cli``: as the command line has it, e.g. ``out="runs/train"``)."""
    f = next(f for f in fields(TrainOptions) if f.name == name)
    if cli and f.metadata["cli_default"] is not None:
        return f.metadata["cli_default"]
    return f.default if f.default is not MISSING else f.default_factory()


def cli_defaults() -> TrainOptions:
    """The defaults of the command line (``TrainOptions`` with each ``cli_default``)."""
    return replace(TrainOptions(), **{f.name: option_default(f.name, cli=True) for f in cli_fields()})


def cli_fields():
    """The fields the command line exposes, with their metadata."""
    return [f for f in fields(TrainOptions) if f.metadata["cli"]]


def differing(recorded: dict, current: dict, allowed=()) -> list[str]:
    """Names of checked options whose values differ between a checkpoint and this run."""
    return [k for k in current if k not in allowed and k in recorded and _plain(recorded[k]) != _plain(current[k])]


def choices_of(meta: dict):
    """A field's allowed values (``choices`` may be a function: the registered architectures)."""
    choices = meta["choices"]
    return tuple(choices()) if callable(choices) else choices


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _describe(meta: dict) -> str:
    kind = meta["kind"].__name__
    if meta["item"] is not None:
        kind = f"a list of {meta['item'].__name__}" + (f" of length {meta['length']}" if meta["length"] else "")
    if meta["choices"]:
        kind = f"one of {list(choices_of(meta))}"
    bounds = []
    if meta["low"] is not None:
        bounds.append(f"{'>' if meta['low_open'] else '>='} {meta['low']}")
    if meta["high"] is not None:
        bounds.append(f"{'<' if meta['high_open'] else '<='} {meta['high']}")
    return " ".join([kind, " and ".join(bounds)]).strip() + (" or null" if meta["none"] else "")


def _checked(name: str, value: Any, meta: dict, where: str):
    """``value`` validated against ``meta`` (see ``_opt``), normalized."""
    if value is None and meta["none"]:
        return None
    fail = ValueError(f"{name}{where}: expected {_describe(meta)}, got {value!r}")
    kind = meta["kind"]
    if meta["item"] is not None:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise fail
        if meta["length"] is not None and len(value) != meta["length"]:
            raise fail
        item_meta = dict(meta, kind=meta["item"], item=None, none=False)
        try:
            return [_checked(name, v, item_meta, where) for v in value]
        except (ValueError, TypeError):
            raise fail from None
    value = _as_kind(value, kind, fail)
    if meta["choices"] is not None and value not in choices_of(meta):
        raise fail
    if kind in (int, float):
        if kind is float and not math.isfinite(value):
            raise fail
        low, high = meta["low"], meta["high"]
        if low is not None and (value < low or (meta["low_open"] and value == low)):
            raise fail
        if high is not None and (value > high or (meta["high_open"] and value == high)):
            raise fail
    return value


def _as_kind(value, kind, fail):
    if kind is bool:
        if not isinstance(value, bool):
            raise fail
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail
        return value
    if kind is float:
        if isinstance(value, str):  # YAML reads 1e-4 as a string
            try:
                value = float(value)
            except ValueError:
                raise fail from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise fail
        return value
    if kind is dict:
        if not isinstance(value, dict):
            raise fail
        return dict(value)
    raise AssertionError(kind)
