"""Teachers from other code bases: EDSR-PyTorch, BasicSR (EDSR, RCAN), official CARN, official CSD.

Spandrel style: canonicalize the wrapper (``params_ema``, ``params``, ``state_dict``, ``model``,
``module.`` prefixes), detect the format from the keys, infer the hyperparameters from tensor
shapes, map every key, and refuse any mismatch by name (missing, unexpected, wrong shape).

Pixel range. EDSR-PyTorch and the official CSD code run on [0, 255] images (``rgb_range``), BasicSR
EDSR/RCAN scale [0, 1] input by ``img_range = 255`` inside, and csd_fast models compute on the same
8-bit scale (``SlimSRModel.img_range``): their parameters load unchanged. A checkpoint trained on
another range R (the original CARN: R = 1) is rescaled by ``f = img_range / R`` (``rescale_units``):
conv + ReLU commute with scaling, so every bias between the mean shifts is multiplied by ``f``;
RCAN's channel attention ends in a sigmoid, which does not commute, so its up-conv weight is
divided by ``f`` and its bias kept.

What shapes cannot tell: EDSR's ``res_scale`` (default 0.1 for 256+ features, the EDSR paper's
large model, else 1.0; pass ``res_scale=`` to override), BasicSR's RGB mean (not stored; DIV2K's),
and the scale of a multi-scale CARN checkpoint (pass ``scale=``).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from .models import SlimSRModel, model_from_config
from .models.base import rescale_units
from .models.slim import DIV2K_RGB_MEAN

FORMATS = ("edsr-pytorch", "csd-official", "basicsr-edsr", "basicsr-rcan", "carn-official")
_WRAPPERS = ("params_ema", "params", "state_dict", "model", "net", "generator")
_MAX_LISTED = 20


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


def detect_format(sd: dict[str, Tensor]) -> str:
    """The source code base of a canonical state dict, one of ``FORMATS``."""
    keys = set(sd)
    if "conv_first.weight" in keys:
        return "basicsr-rcan" if any(".rcab." in k for k in keys) else "basicsr-edsr"
    if "head.0.weight" in keys and "body.0.body.0.weight" in keys and "tail.1.weight" in keys:
        return "edsr-pytorch"
    if "head.weight" in keys and "tail_conv.weight" in keys and "body_conv.weight" in keys:
        return "csd-official"
    if "entry.weight" in keys and "exit.weight" in keys and any(k.startswith("upsample.up") for k in keys):
        return "carn-official"
    if "entry.weight" in keys and "upsample.blocks.0.weight" in keys:
        raise ValueError("state dict: an official-CSD CARN; not supported, its upsampler has no ReLU unlike "
                         "CARN and csd_fast's SlimCARN (official CARN checkpoints load)")
    raise ValueError(
        f"state dict: unrecognized architecture (expected one of {FORMATS}); first keys: {sorted(keys)[:8]}"
    )


def _count(sd, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.fullmatch(k))})


def _scale_from_upsampler(sd, conv_keys: list[str], n_feats: int) -> int:
    """x2: one conv to 4C, x4: two, x3: one conv to 9C."""
    outs = [sd[k].shape[0] for k in conv_keys]
    if outs == [9 * n_feats]:
        return 3
    if outs and all(o == 4 * n_feats for o in outs) and len(outs) in (1, 2):
        return 2 ** len(outs)
    raise ValueError(f"state dict: upsampler convs {conv_keys} with {outs} outputs match no scale of 2, 3, 4")


def _mean_from_shift(sd, prefix: str, rgb_range: float) -> tuple[float, ...]:
    """RGB mean of a 1x1 MeanShift conv (``add_mean``: bias = +range * mean, weight = identity)."""
    w = sd[f"{prefix}.weight"]
    if w.shape != (3, 3, 1, 1) or not torch.allclose(w.view(3, 3).float(), torch.eye(3)):
        raise ValueError(f"state dict: {prefix}.weight is not the identity (std != 1 is not supported)")
    return tuple(float(v) / rgb_range for v in sd[f"{prefix}.bias"])


def _default_res_scale(n_feats: int, res_scale: float | None) -> float:
    return res_scale if res_scale is not None else (0.1 if n_feats >= 256 else 1.0)


def _plan(fmt: str, sd, scale, res_scale, rgb_range):
    """(arch, config, rules, range, consumed keys): ``rules`` map our keys to theirs in order."""
    if fmt in ("edsr-pytorch", "csd-official"):
        pytorch = fmt == "edsr-pytorch"
        n_feats = sd["head.0.weight" if pytorch else "head.weight"].shape[0]
        n_blocks = _count(sd, r"body\.(\d+)\.body\.0\.weight" if pytorch else r"body\.(\d+)\.conv1\.weight")
        up = sorted((k for k in sd if re.fullmatch(r"tail\.0\.\d+\.weight" if pytorch else r"upsampler\.blocks\.\d+\.weight", k)),
                    key=lambda k: int(k.split(".")[-2]))
        rng = rgb_range or (255.0 if sd["add_mean.bias"].abs().max() > 2 else 1.0)
        config = dict(scale=_scale_from_upsampler(sd, up, n_feats), n_feats=n_feats, n_resblocks=n_blocks,
                      res_scale=_default_res_scale(n_feats, res_scale), rgb_mean=_mean_from_shift(sd, "add_mean", rng))
        if pytorch:
            rules = [(r"head\.", "head.0."), (r"body\.(\d+)\.conv1\.", r"body.\1.body.0."),
                     (r"body\.(\d+)\.conv2\.", r"body.\1.body.2."), (r"body_conv\.", f"body.{n_blocks}."),
                     (r"upsampler\.convs\.(\d+)\.", lambda m: f"tail.0.{2 * int(m.group(1))}."), (r"tail\.", "tail.1.")]
        else:
            rules = [(r"upsampler\.convs\.", "upsampler.blocks."), (r"tail\.", "tail_conv.")]
        consumed = ["sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias"]
        return "edsr", config, rules, rng, consumed
    if fmt in ("basicsr-edsr", "basicsr-rcan"):
        n_feats = sd["conv_first.weight"].shape[0]
        up = sorted((k for k in sd if re.fullmatch(r"upsample\.\d+\.weight", k)), key=lambda k: int(k.split(".")[1]))
        common = dict(scale=_scale_from_upsampler(sd, up, n_feats), n_feats=n_feats, rgb_mean=DIV2K_RGB_MEAN)
        outer = [(r"head\.", "conv_first."), (r"body_conv\.", "conv_after_body."),
                 (r"upsampler\.convs\.(\d+)\.", lambda m: f"upsample.{2 * int(m.group(1))}."), (r"tail\.", "conv_last.")]
        if fmt == "basicsr-edsr":
            config = dict(common, n_resblocks=_count(sd, r"body\.(\d+)\.conv1\.weight"),
                          res_scale=_default_res_scale(n_feats, res_scale))
            return "edsr", config, outer, rgb_range or 255.0, []
        ca = sd["body.0.residual_group.0.rcab.3.attention.1.weight"].shape[0]
        config = dict(common, n_resgroups=_count(sd, r"body\.(\d+)\.conv\.weight"),
                      n_resblocks=_count(sd, r"body\.0\.residual_group\.(\d+)\.rcab\.0\.weight"),
                      reduction=max(1, n_feats // ca), ca_channels=ca)
        block = r"groups\.(\d+)\.blocks\.(\d+)\."
        rules = [(block + r"conv1\.", r"body.\1.residual_group.\2.rcab.0."),
                 (block + r"conv2\.", r"body.\1.residual_group.\2.rcab.2."),
                 (block + r"ca\.down\.", r"body.\1.residual_group.\2.rcab.3.attention.1."),
                 (block + r"ca\.up\.", r"body.\1.residual_group.\2.rcab.3.attention.3."),
                 (r"groups\.(\d+)\.conv\.", r"body.\1.conv.")] + outer
        return "rcan", config, rules, rgb_range or 255.0, []
    # carn-official
    n_feats = sd["entry.weight"].shape[0]
    scales = sorted({int(m.group(1)) for k in sd if (m := re.match(r"upsample\.up(\d)\.", k))})
    if scales:
        if scale is None:
            raise ValueError(f"scale: this CARN checkpoint is multi-scale (x{', x'.join(map(str, scales))}); pass scale=")
        if scale not in scales:
            raise ValueError(f"scale: expected one of {scales} for this multi-scale CARN checkpoint, got {scale!r}")
        up_prefix = f"upsample.up{scale}.body."
    else:
        up_prefix = "upsample.up.body."
    up = sorted((k for k in sd if k.startswith(up_prefix) and k.endswith(".weight")), key=lambda k: int(k.split(".")[-2]))
    rng = rgb_range or 1.0
    config = dict(scale=_scale_from_upsampler(sd, up, n_feats), n_feats=n_feats,
                  rgb_mean=_mean_from_shift(sd, "add_mean.shifter", rng))
    rules = [(r"head\.", "entry."), (r"tail\.", "exit."),
             (r"body\.units\.(\d)\.units\.(\d)\.conv(\d)\.", lambda m: f"b{int(m[1]) + 1}.b{int(m[2]) + 1}.body.{2 * int(m[3]) - 2}."),
             (r"body\.units\.(\d)\.fuse\.(\d)\.", lambda m: f"b{int(m[1]) + 1}.c{int(m[2]) + 1}.body.0."),
             (r"body\.fuse\.(\d)\.", lambda m: f"c{int(m[1]) + 1}.body.0."),
             (r"upsampler\.convs\.(\d+)\.", lambda m: f"{up_prefix}{3 * int(m[1])}.")]
    consumed = [f"{p}.shifter.{t}" for p in ("sub_mean", "add_mean") for t in ("weight", "bias")]
    consumed += [k for k in sd if k.startswith("upsample.up") and not k.startswith(up_prefix)]  # the other scales
    return "carn", config, rules, rng, consumed


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
    fmt = detect_format(sd)
    arch, config, rules, rng, consumed = _plan(fmt, sd, scale, res_scale, rgb_range)
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
    out = rescale_units(out, SlimSRModel.img_range / rng)
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
