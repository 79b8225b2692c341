"""CARN checkpoints (see ``csd_fast.convert``): the official CARN code's (nmhkahn/CARN-pytorch) load
into the corrected ``SlimCARN``, the official CSD code's into ``SlimCARNCSD`` (its own variant).

A multi-scale CARN checkpoint holds one upsampler per scale: ``scale=`` picks one. The pixel range
is guessed from the mean shift unless ``rgb_range=`` is passed.
"""
from __future__ import annotations

import re

from ..formats import CheckpointFormat, KeyPlan, mean_from_shift, numbered, range_from_shift, scale_from_upsampler


def _official(sd, scale, res_scale, rgb_range) -> KeyPlan:
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
    up = numbered(sd, re.escape(up_prefix) + r"\d+\.weight")
    guessed = []
    rng = range_from_shift(sd, "add_mean.shifter", rgb_range, guessed)
    config = dict(scale=scale_from_upsampler(sd, up, n_feats), n_feats=n_feats,
                  rgb_mean=mean_from_shift(sd, "add_mean.shifter", rng))
    rules = [(r"head\.", "entry."), (r"tail\.", "exit."),
             (r"body\.units\.(\d)\.units\.(\d)\.conv(\d)\.", lambda m: f"b{int(m[1]) + 1}.b{int(m[2]) + 1}.body.{2 * int(m[3]) - 2}."),
             (r"body\.units\.(\d)\.fuse\.(\d)\.", lambda m: f"b{int(m[1]) + 1}.c{int(m[2]) + 1}.body.0."),
             (r"body\.fuse\.(\d)\.", lambda m: f"c{int(m[1]) + 1}.body.0."),
             (r"upsampler\.convs\.(\d+)\.", lambda m: f"{up_prefix}{3 * int(m[1])}.")]
    consumed = [f"{p}.shifter.{t}" for p in ("sub_mean", "add_mean") for t in ("weight", "bias")]
    consumed += [k for k in sd if k.startswith("upsample.up") and not k.startswith(up_prefix)]  # the other scales
    return KeyPlan(config, rules, rng, consumed, guessed)


def _csd_official(sd, scale, res_scale, rgb_range) -> KeyPlan:
    """Official CSD: entry, bI.bJ.conv1/2, bI.cJ.conv, cJ.conv, upsample.blocks.K, exit, sub_mean/add_mean."""
    n_feats = sd["entry.weight"].shape[0]
    guessed = []
    rng = range_from_shift(sd, "add_mean", rgb_range, guessed)
    config = dict(scale=scale_from_upsampler(sd, numbered(sd, r"upsample\.blocks\.\d+\.weight"), n_feats),
                  n_feats=n_feats, rgb_mean=mean_from_shift(sd, "add_mean", rng))
    rules = [(r"head\.", "entry."), (r"tail\.", "exit."),
             (r"body\.units\.(\d)\.units\.(\d)\.", lambda m: f"b{int(m[1]) + 1}.b{int(m[2]) + 1}."),
             (r"body\.units\.(\d)\.fuse\.(\d)\.", lambda m: f"b{int(m[1]) + 1}.c{int(m[2]) + 1}.conv."),
             (r"body\.fuse\.(\d)\.", lambda m: f"c{int(m[1]) + 1}.conv."),
             (r"upsampler\.convs\.", "upsample.blocks.")]
    consumed = [f"{p}.{t}" for p in ("sub_mean", "add_mean") for t in ("weight", "bias")]
    return KeyPlan(config, rules, rng, consumed, guessed)


def _is_official(keys) -> bool:
    return {"entry.weight", "exit.weight"} <= keys and any(k.startswith("upsample.up") for k in keys)


FORMATS = (CheckpointFormat("carn-official", _is_official, _official),)
CSD_FORMATS = (
    CheckpointFormat(
        "csd-official-carn",
        lambda keys: "entry.weight" in keys and "upsample.blocks.0.weight" in keys and not _is_official(keys),
        _csd_official,
    ),
)
