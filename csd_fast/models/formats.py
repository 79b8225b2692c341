"""Foreign checkpoint formats, declared by each architecture (``<arch>/formats.py``) and read by
``csd_fast.convert``, plus the shape-inference helpers they share.

A :class:`CheckpointFormat` recognizes its code base from the keys of a canonical state dict
(``detect``) and reads the hyperparameters off the tensor shapes (``plan`` -> :class:`KeyPlan`):
the model config, the rules mapping csd_fast keys to the checkpoint's, the pixel range, the
checkpoint keys consumed without a counterpart, and ``guessed``: the hyperparameters the file
cannot tell (res_scale, RGB mean, pixel range) that were guessed, which ``csd_fast.convert`` warns
about. Tensors on another pixel range than csd_fast's 8-bit scale are rescaled by the
architecture's ``rescale`` (see ``csd_fast.convert``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import torch

from .slim import DIV2K_RGB_MEAN


@dataclass
class KeyPlan:
    config: dict
    rules: list
    rgb_range: float
    consumed: list
    guessed: list = field(default_factory=list)  # "name=value (why)" for each guessed hyperparameter


@dataclass(frozen=True)
class CheckpointFormat:
    name: str
    detect: Callable[[set], bool]
    plan: Callable[..., KeyPlan]  # plan(sd, scale, res_scale, rgb_range)


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


def range_from_shift(sd, prefix: str, rgb_range: float | None, guessed: list) -> float:
    """The pixel range: ``rgb_range`` when given, else guessed from the 1x1 mean shift ``prefix``
    (its bias is range * mean: 255 when it exceeds 2, else 1) and recorded in ``guessed``."""
    if rgb_range is not None:
        return float(rgb_range)
    rng = 255.0 if sd[f"{prefix}.bias"].abs().max() > 2 else 1.0
    guessed.append(f"rgb_range={rng:g} (from {prefix}.bias = range * mean; pass rgb_range=)")
    return rng


def basicsr_range(rgb_range: float | None, guessed: list) -> float:
    """BasicSR stores neither ``img_range`` nor the RGB mean: 255 and DIV2K's mean are assumed (recorded)."""
    guessed.append(f"rgb_mean={DIV2K_RGB_MEAN} (DIV2K's, BasicSR's default)")
    if rgb_range is not None:
        return float(rgb_range)
    guessed.append("img_range=255 (BasicSR's default; pass rgb_range=)")
    return 255.0


def basicsr_frame(sd):
    """``(common config, outer rules)`` of BasicSR's EDSR/RCAN: conv_first, conv_after_body, upsample, conv_last."""
    n_feats = sd["conv_first.weight"].shape[0]
    up = numbered(sd, r"upsample\.\d+\.weight")
    common = dict(scale=scale_from_upsampler(sd, up, n_feats), n_feats=n_feats, rgb_mean=DIV2K_RGB_MEAN)
    outer = [(r"head\.", "conv_first."), (r"body_conv\.", "conv_after_body."),
             (r"upsampler\.convs\.(\d+)\.", lambda m: f"upsample.{2 * int(m.group(1))}."), (r"tail\.", "conv_last.")]
    return common, outer
