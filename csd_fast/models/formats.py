"""Foreign checkpoint formats, declared by each architecture (``<arch>/formats.py``) and read by
``csd_fast.convert``, plus the shape-inference helpers they share.

A :class:`CheckpointFormat` recognizes its code base from the keys of a canonical state dict
(``detect``) and reads the hyperparameters off the tensor shapes (``plan`` -> :class:`KeyPlan`):
the model config, the rules mapping csd_fast keys to the checkpoint's, the pixel range and the
checkpoint keys consumed without a counterpart. ``rescale`` turns a tensor on the ``rng`` pixel
range into csd_fast's [0, 1] convention (see ``csd_fast.convert``). ``unsupported``: the format
is recognized only to be refused with that message.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from .slim import DIV2K_RGB_MEAN


@dataclass
class KeyPlan:
    config: dict
    rules: list
    rgb_range: float
    consumed: list


def divide_biases(key: str, t: Tensor, rng: float) -> Tensor:
    """conv + ReLU networks commute with scaling: every bias between the mean shifts is divided by the range."""
    return t / rng if key.endswith(".bias") else t


@dataclass(frozen=True)
class CheckpointFormat:
    name: str
    detect: Callable[[set], bool]
    plan: Optional[Callable[..., KeyPlan]] = None  # plan(sd, scale, res_scale, rgb_range)
    rescale: Callable[[str, Tensor, float], Tensor] = divide_biases
    unsupported: Optional[str] = None


def count(sd, pattern: str) -> int:
    """How many distinct values the first group of ``pattern`` takes over the keys of ``sd``."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.fullmatch(k))})


def numbered(sd, pattern: str) -> list[str]:
    """The keys of ``sd`` matching ``pattern``, sorted by their last numeric component but one (``x.<i>.weight``)."""
    return sorted((k for k in sd if re.fullmatch(pattern, k)), key=lambda k: int(k.split(".")[-2]))


def scale_from_upsampler(sd, conv_keys: list[str], n_feats: int) -> int:
    """x2: one conv to 4C, x4: two, x3: one conv to 9C."""
    outs = [sd[k].shape[0] for k in conv_keys]
    if outs == [9 * n_feats]:
        return 3
    if outs and all(o == 4 * n_feats for o in outs) and len(outs) in (1, 2):
        return 2 ** len(outs)
    raise ValueError(f"state dict: upsampler convs {conv_keys} with {outs} outputs match no scale of 2, 3, 4")


def mean_from_shift(sd, prefix: str, rgb_range: float) -> tuple[float, ...]:
    """RGB mean of a 1x1 MeanShift conv (``add_mean``: bias = +range * mean, weight = identity)."""
    w = sd[f"{prefix}.weight"]
    if w.shape != (3, 3, 1, 1) or not torch.allclose(w.view(3, 3).float(), torch.eye(3)):
        raise ValueError(f"state dict: {prefix}.weight is not the identity (std != 1 is not supported)")
    return tuple(float(v) / rgb_range for v in sd[f"{prefix}.bias"])


def basicsr_frame(sd):
    """``(common config, outer rules)`` of BasicSR's EDSR/RCAN: conv_first, conv_after_body, upsample, conv_last."""
    n_feats = sd["conv_first.weight"].shape[0]
    up = numbered(sd, r"upsample\.\d+\.weight")
    common = dict(scale=scale_from_upsampler(sd, up, n_feats), n_feats=n_feats, rgb_mean=DIV2K_RGB_MEAN)
    outer = [(r"head\.", "conv_first."), (r"body_conv\.", "conv_after_body."),
             (r"upsampler\.convs\.(\d+)\.", lambda m: f"upsample.{2 * int(m.group(1))}."), (r"tail\.", "conv_last.")]
    return common, outer
