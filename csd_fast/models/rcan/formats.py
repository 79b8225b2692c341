"""RCAN checkpoints of BasicSR (see ``csd_fast.convert``).

The channel attention ends in a sigmoid, which does not commute with the pixel range: its second
1x1 conv gets ``weight * range`` and keeps its bias; every other bias is divided by the range.
"""
from __future__ import annotations

from ..formats import CheckpointFormat, KeyPlan, basicsr_frame, count


def _basicsr(sd, scale, res_scale, rgb_range) -> KeyPlan:
    common, outer = basicsr_frame(sd)
    ca = sd["body.0.residual_group.0.rcab.3.attention.1.weight"].shape[0]
    config = dict(common, n_resgroups=count(sd, r"body\.(\d+)\.conv\.weight"),
                  n_resblocks=count(sd, r"body\.0\.residual_group\.(\d+)\.rcab\.0\.weight"),
                  reduction=max(1, common["n_feats"] // ca), ca_channels=ca)
    block = r"groups\.(\d+)\.blocks\.(\d+)\."
    rules = [(block + r"conv1\.", r"body.\1.residual_group.\2.rcab.0."),
             (block + r"conv2\.", r"body.\1.residual_group.\2.rcab.2."),
             (block + r"ca\.down\.", r"body.\1.residual_group.\2.rcab.3.attention.1."),
             (block + r"ca\.up\.", r"body.\1.residual_group.\2.rcab.3.attention.3."),
             (r"groups\.(\d+)\.conv\.", r"body.\1.conv.")] + outer
    return KeyPlan(config, rules, rgb_range or 255.0, [])


def _rescale(key, t, rng):
    if ".ca.up." in key:
        return t * rng if key.endswith(".weight") else t
    return t / rng if key.endswith(".bias") else t


FORMATS = (
    CheckpointFormat("basicsr-rcan", lambda keys: "conv_first.weight" in keys and any(".rcab." in k for k in keys),
                     _basicsr, rescale=_rescale),
)
