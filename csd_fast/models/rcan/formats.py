"""RCAN checkpoints of BasicSR, the original RCAN code (yulunzhang/RCAN, also EDSR-PyTorch's
``rcan.py``) and the official CSD code (see ``csd_fast.convert``), and how RCAN's parameters change
with the network's internal pixel scale (``rescale``).

The original and official-CSD files hold their mean shifts (RGB mean times the pixel range); the
range is guessed from them unless ``rgb_range=`` is passed. ``res_scale`` is unused by RCAN.
"""
from __future__ import annotations

from torch import Tensor

from ..formats import (
    CheckpointFormat, KeyPlan, basicsr_frame, basicsr_range, count, mean_from_shift, numbered, range_from_shift,
    scale_from_upsampler,
)

_MEAN_SHIFTS = ["sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias"]
_BLOCK = r"groups\.(\d+)\.blocks\.(\d+)\."


def _basicsr(sd, scale, res_scale, rgb_range) -> KeyPlan:
    common, outer = basicsr_frame(sd)
    guessed = []
    rng = basicsr_range(rgb_range, guessed)
    ca = sd["body.0.residual_group.0.rcab.3.attention.1.weight"].shape[0]
    config = dict(common, n_resgroups=count(sd, r"body\.(\d+)\.conv\.weight"),
                  n_resblocks=count(sd, r"body\.0\.residual_group\.(\d+)\.rcab\.0\.weight"),
                  reduction=max(1, common["n_feats"] // ca), ca_channels=ca)
    rules = [(_BLOCK + r"conv1\.", r"body.\1.residual_group.\2.rcab.0."),
             (_BLOCK + r"conv2\.", r"body.\1.residual_group.\2.rcab.2."),
             (_BLOCK + r"ca\.down\.", r"body.\1.residual_group.\2.rcab.3.attention.1."),
             (_BLOCK + r"ca\.up\.", r"body.\1.residual_group.\2.rcab.3.attention.3."),
             (r"groups\.(\d+)\.conv\.", r"body.\1.conv.")] + outer
    return KeyPlan(config, rules, rng, [], guessed)


def _with_mean_shift(sd, rgb_range, head: str, ca_down: str, groups: str, blocks: str, up: str) -> tuple:
    """``(config, pixel range, guessed)`` of a file with mean-shift convs (original / official CSD)."""
    guessed = []
    rng = range_from_shift(sd, "add_mean", rgb_range, guessed)
    n_feats, ca = sd[head].shape[0], sd[ca_down].shape[0]
    config = dict(scale=scale_from_upsampler(sd, numbered(sd, up), n_feats), n_feats=n_feats,
                  n_resgroups=count(sd, groups), n_resblocks=count(sd, blocks), reduction=max(1, n_feats // ca),
                  ca_channels=ca, rgb_mean=mean_from_shift(sd, "add_mean", rng))
    return config, rng, guessed


def _original(sd, scale, res_scale, rgb_range) -> KeyPlan:
    """yulunzhang/RCAN: head.0, body.G.body.B.body.{0,2} (RCAB convs), body.G.body.B.body.3.conv_du.{0,2}
    (attention), body.G.body.<n_resblocks> (group conv), body.<n_resgroups>, tail.0.<2k>, tail.1."""
    config, rng, guessed = _with_mean_shift(
        sd, rgb_range, "head.0.weight", "body.0.body.0.body.3.conv_du.0.weight",
        r"body\.(\d+)\.body\.0\.body\.0\.weight", r"body\.0\.body\.(\d+)\.body\.0\.weight", r"tail\.0\.\d+\.weight")
    g, b = config["n_resgroups"], config["n_resblocks"]
    rules = [(_BLOCK + r"conv1\.", r"body.\1.body.\2.body.0."), (_BLOCK + r"conv2\.", r"body.\1.body.\2.body.2."),
             (_BLOCK + r"ca\.down\.", r"body.\1.body.\2.body.3.conv_du.0."),
             (_BLOCK + r"ca\.up\.", r"body.\1.body.\2.body.3.conv_du.2."),
             (r"groups\.(\d+)\.conv\.", rf"body.\1.body.{b}."), (r"head\.", "head.0."), (r"body_conv\.", f"body.{g}."),
             (r"upsampler\.convs\.(\d+)\.", lambda m: f"tail.0.{2 * int(m.group(1))}."), (r"tail\.", "tail.1.")]
    return KeyPlan(config, rules, rng, list(_MEAN_SHIFTS), guessed)


def _csd_official(sd, scale, res_scale, rgb_range) -> KeyPlan:
    """Official CSD: head_conv, body.G.body.B.body.{0,1}, body.G.body.B.caLayer.conv_du.{0,1}, body.G.conv,
    body_conv, upsampler.blocks.K, tail_conv."""
    config, rng, guessed = _with_mean_shift(
        sd, rgb_range, "head_conv.weight", "body.0.body.0.caLayer.conv_du.0.weight",
        r"body\.(\d+)\.conv\.weight", r"body\.0\.body\.(\d+)\.body\.0\.weight", r"upsampler\.blocks\.\d+\.weight")
    rules = [(_BLOCK + r"conv1\.", r"body.\1.body.\2.body.0."), (_BLOCK + r"conv2\.", r"body.\1.body.\2.body.1."),
             (_BLOCK + r"ca\.down\.", r"body.\1.body.\2.caLayer.conv_du.0."),
             (_BLOCK + r"ca\.up\.", r"body.\1.body.\2.caLayer.conv_du.1."),
             (r"groups\.(\d+)\.conv\.", r"body.\1.conv."), (r"head\.", "head_conv."),
             (r"upsampler\.convs\.", "upsampler.blocks."), (r"tail\.", "tail_conv.")]
    return KeyPlan(config, rules, rng, list(_MEAN_SHIFTS), guessed)


def rescale(key: str, t: Tensor, factor: float) -> Tensor:
    """The parameter after the internal pixel scale is multiplied by ``factor`` (same function): biases
    x factor, except in the channel attention, which ends in a sigmoid (no scaling commutes with it):
    its up-conv weight / factor (its input grew by ``factor``), its bias kept."""
    if ".ca.up." in key:
        return t / factor if key.endswith(".weight") else t
    return t * factor if key.endswith(".bias") else t


FORMATS = (
    CheckpointFormat("basicsr-rcan", lambda keys: "conv_first.weight" in keys and any(".rcab." in k for k in keys),
                     _basicsr),
    CheckpointFormat("rcan-original", lambda keys: {"head.0.weight", "body.0.body.0.body.3.conv_du.0.weight"} <= keys,
                     _original),
    CheckpointFormat("csd-official-rcan", lambda keys: {"head_conv.weight", "body.0.body.0.caLayer.conv_du.0.weight"} <= keys,
                     _csd_official),
)
