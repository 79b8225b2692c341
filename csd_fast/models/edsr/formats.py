"""EDSR checkpoints of EDSR-PyTorch, the official CSD code and BasicSR (see ``csd_fast.convert``).

EDSR's ``res_scale`` is not in the weights: 0.1 for 256+ features (the EDSR paper's large
model), else 1.0, unless ``res_scale=`` is passed.
"""
from __future__ import annotations

from ..formats import CheckpointFormat, KeyPlan, basicsr_frame, count, mean_from_shift, numbered, scale_from_upsampler

_MEAN_SHIFTS = ["sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias"]


def _default_res_scale(n_feats: int, res_scale: float | None) -> float:
    return res_scale if res_scale is not None else (0.1 if n_feats >= 256 else 1.0)


def _edsr_pytorch_like(sd, res_scale, rgb_range, pytorch: bool) -> KeyPlan:
    n_feats = sd["head.0.weight" if pytorch else "head.weight"].shape[0]
    n_blocks = count(sd, r"body\.(\d+)\.body\.0\.weight" if pytorch else r"body\.(\d+)\.conv1\.weight")
    up = numbered(sd, r"tail\.0\.\d+\.weight" if pytorch else r"upsampler\.blocks\.\d+\.weight")
    rng = rgb_range or (255.0 if sd["add_mean.bias"].abs().max() > 2 else 1.0)
    config = dict(scale=scale_from_upsampler(sd, up, n_feats), n_feats=n_feats, n_resblocks=n_blocks,
                  res_scale=_default_res_scale(n_feats, res_scale), rgb_mean=mean_from_shift(sd, "add_mean", rng))
    if pytorch:
        rules = [(r"head\.", "head.0."), (r"body\.(\d+)\.conv1\.", r"body.\1.body.0."),
                 (r"body\.(\d+)\.conv2\.", r"body.\1.body.2."), (r"body_conv\.", f"body.{n_blocks}."),
                 (r"upsampler\.convs\.(\d+)\.", lambda m: f"tail.0.{2 * int(m.group(1))}."), (r"tail\.", "tail.1.")]
    else:
        rules = [(r"upsampler\.convs\.", "upsampler.blocks."), (r"tail\.", "tail_conv.")]
    return KeyPlan(config, rules, rng, list(_MEAN_SHIFTS))


def _basicsr(sd, scale, res_scale, rgb_range) -> KeyPlan:
    common, outer = basicsr_frame(sd)
    config = dict(common, n_resblocks=count(sd, r"body\.(\d+)\.conv1\.weight"),
                  res_scale=_default_res_scale(common["n_feats"], res_scale))
    return KeyPlan(config, outer, rgb_range or 255.0, [])


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
