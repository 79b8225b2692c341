"""EDSR checkpoints of EDSR-PyTorch, the official CSD code and BasicSR (see ``csd_fast.convert``).

EDSR's ``res_scale`` is not in the weights; unless ``res_scale=`` is passed it is guessed (with a
warning): 0.1 for the official CSD code whatever the width (its default), else 0.1 for 256+
features (the EDSR paper's large model) and 1.0 below.
"""
from __future__ import annotations

from ..formats import (
    CheckpointFormat, KeyPlan, basicsr_frame, basicsr_range, count, mean_from_shift, numbered, range_from_shift,
    scale_from_upsampler,
)

_MEAN_SHIFTS = ["sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias"]


def _res_scale(res_scale: float | None, guess: float, why: str, guessed: list) -> float:
    if res_scale is not None:
        return res_scale
    guessed.append(f"res_scale={guess:g} ({why}; pass res_scale=)")
    return guess


def _width_res_scale(n_feats: int, res_scale: float | None, guessed: list) -> float:
    large = n_feats >= 256
    why = "the EDSR paper's large model" if large else "EDSR's default below 256 features"
    return _res_scale(res_scale, 0.1 if large else 1.0, why, guessed)


def _edsr_pytorch_like(sd, res_scale, rgb_range, pytorch: bool) -> KeyPlan:
    n_feats = sd["head.0.weight" if pytorch else "head.weight"].shape[0]
    n_blocks = count(sd, r"body\.(\d+)\.body\.0\.weight" if pytorch else r"body\.(\d+)\.conv1\.weight")
    up = numbered(sd, r"tail\.0\.\d+\.weight" if pytorch else r"upsampler\.blocks\.\d+\.weight")
    guessed = []
    rng = range_from_shift(sd, "add_mean", rgb_range, guessed)
    res = (_width_res_scale(n_feats, res_scale, guessed) if pytorch
           else _res_scale(res_scale, 0.1, "the official CSD code's default, whatever the width", guessed))
    config = dict(scale=scale_from_upsampler(sd, up, n_feats), n_feats=n_feats, n_resblocks=n_blocks,
                  res_scale=res, rgb_mean=mean_from_shift(sd, "add_mean", rng))
    if pytorch:
        rules = [(r"head\.", "head.0."), (r"body\.(\d+)\.conv1\.", r"body.\1.body.0."),
                 (r"body\.(\d+)\.conv2\.", r"body.\1.body.2."), (r"body_conv\.", f"body.{n_blocks}."),
                 (r"upsampler\.convs\.(\d+)\.", lambda m: f"tail.0.{2 * int(m.group(1))}."), (r"tail\.", "tail.1.")]
    else:
        rules = [(r"upsampler\.convs\.", "upsampler.blocks."), (r"tail\.", "tail_conv.")]
    return KeyPlan(config, rules, rng, list(_MEAN_SHIFTS), guessed)


def _basicsr(sd, scale, res_scale, rgb_range) -> KeyPlan:
    common, outer = basicsr_frame(sd)
    guessed = []
    rng = basicsr_range(rgb_range, guessed)
    config = dict(common, n_resblocks=count(sd, r"body\.(\d+)\.conv1\.weight"),
                  res_scale=_width_res_scale(common["n_feats"], res_scale, guessed))
    return KeyPlan(config, outer, rng, [], guessed)


FORMATS = (
    CheckpointFormat(
        "edsr-pytorch",
        lambda keys: {"head.0.weight", "body.0.body.0.weight", "tail.1.weight"} <= keys,
        lambda sd, scale, res_scale, rgb_range: _edsr_pytorch_like(sd, res_scale, rgb_range, pytorch=True),
    ),
    CheckpointFormat(
        "csd-official",
        lambda keys: {"head.weight", "tail_conv.weight", "body_conv.weight"} <= keys,
        lambda sd, scale, res_scale, rgb_range: _edsr_pytorch_like(sd, res_scale, rgb_range, pytorch=False),
    ),
    CheckpointFormat(
        "basicsr-edsr",
        lambda keys: "conv_first.weight" in keys and not any(".rcab." in k for k in keys),
        _basicsr,
    ),
)
