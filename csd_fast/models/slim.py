"""Channel-splitting building blocks (CSSR-Net, CSD paper Sec. 3.1).

A slim layer at width ``r`` uses the first ``int(r * C)`` channels of its full weights, the
official code's plain truncation: ``weight[:int(r*out), :int(r*in)]`` and ``bias[:int(r*out)]``.
The number of input channels is read off the input itself, so slicing composes layer by layer.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def check_width(width: float) -> float:
    """Validate a width multiplier: a number in (0, 1]."""
    if isinstance(width, bool) or not isinstance(width, (int, float)):
        raise TypeError(f"width: expected a float in (0, 1], got {type(width).__name__}")
    if not (0.0 < width <= 1.0) or math.isnan(width):
        raise ValueError(f"width: expected a float in (0, 1], got {width}")
    return float(width)


def slim_channels(channels: int, width: float) -> int:
    """``int(width * channels)``, the official truncation; refuses widths that leave 0 channels."""
    n = int(width * channels)
    if n < 1:
        raise ValueError(
            f"width: {width} leaves int({width} * {channels}) = 0 channels; "
            f"expected width >= {1.0 / channels:.4g} for a layer of {channels} channels"
        )
    return n


class SlimConv2d(nn.Conv2d):
    """A conv whose leading channels form the sub-network at any width.

    ``fixed_out`` keeps every output channel (the tail's 3 colours). ``out_groups`` treats the
    outputs as ``out_groups`` interleaved copies per channel, as a conv feeding
    ``PixelShuffle(s)`` (``out_groups = s*s``): it keeps ``s*s * int(r * C/(s*s))`` outputs, which
    shuffle exactly onto the first ``int(r * C/(s*s))`` channels. ``in_groups`` treats the input as
    ``in_groups`` concatenated blocks of equal size and keeps the leading channels of *each*
    block (CARN's 1x1 fusion of a concatenation; the official code slices the concatenation as
    one block, which mis-aligns its parts).
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, *, fixed_out=False, out_groups=1, in_groups=1, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        if out_channels % out_groups or in_channels % in_groups:
            raise ValueError(
                f"out_groups/in_groups: expected divisors of out_channels={out_channels} and "
                f"in_channels={in_channels}, got {out_groups} and {in_groups}"
            )
        self.fixed_out, self.out_groups, self.in_groups = fixed_out, out_groups, in_groups

    def out_channels_at(self, width: float) -> int:
        if self.fixed_out:
            return self.out_channels
        return self.out_groups * slim_channels(self.out_channels // self.out_groups, width)

    def sliced(self, in_channels: int, width: float) -> tuple[Tensor, Tensor | None]:
        """The weight and bias of the sub-layer seeing ``in_channels`` inputs at ``width``."""
        if in_channels % self.in_groups or in_channels > self.in_channels:
            raise ValueError(
                f"input: expected at most {self.in_channels} channels in {self.in_groups} equal "
                f"blocks, got {in_channels} channels"
            )
        n_out = self.out_channels_at(width)
        w, b = self.weight[:n_out], None if self.bias is None else self.bias[:n_out]
        if in_channels == self.in_channels:
            return w, b
        block, keep = self.in_channels // self.in_groups, in_channels // self.in_groups
        if self.in_groups == 1:
            return w[:, :keep], b
        index = torch.cat([torch.arange(g * block, g * block + keep) for g in range(self.in_groups)])
        return w[:, index.to(w.device)], b

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        if x.shape[1] == self.in_channels and self.out_channels_at(width) == self.out_channels:
            return F.conv2d(x, self.weight, self.bias, padding=self.padding)
        w, b = self.sliced(x.shape[1], width)
        return F.conv2d(x, w, b, padding=self.padding)


class SlimUpsampler(nn.Module):
    """log2(s) stages of conv(C -> 4C) + PixelShuffle(2) for s = 2, 4; conv(C -> 9C) + PixelShuffle(3) for 3.

    ``act`` adds a ReLU after each stage (CARN). The official code's x8 bug (``scale // 2``
    stages) does not arise: only 2, 3, 4 are accepted.
    """

    def __init__(self, scale: int, channels: int, act: bool = False):
        super().__init__()
        self.factors = upsample_factors(scale)
        self.convs = nn.ModuleList(SlimConv2d(channels, f * f * channels, 3, out_groups=f * f) for f in self.factors)
        self.act = act

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        for f, conv in zip(self.factors, self.convs):
            x = F.pixel_shuffle(conv(x, width), f)
            if self.act:
                x = F.relu(x)
        return x


def upsample_factors(scale: int) -> tuple[int, ...]:
    """PixelShuffle factors realizing ``scale``; only 2, 3 and 4 are supported."""
    factors = {2: (2,), 3: (3,), 4: (2, 2)}
    if not isinstance(scale, int) or isinstance(scale, bool) or scale not in factors:
        raise ValueError(f"scale: expected one of 2, 3, 4, got {scale!r}")
    return factors[scale]


class MeanShift(nn.Module):
    """``x + sign * mean`` per RGB channel (std 1); never sliced. Buffer ``mean`` of shape [3]."""

    def __init__(self, rgb_mean=DIV2K_RGB_MEAN):
        super().__init__()
        self.register_buffer("mean", torch.tensor(rgb_mean, dtype=torch.float32).view(1, 3, 1, 1))

    def sub(self, x: Tensor) -> Tensor:
        return x - self.mean.to(x.dtype)

    def add(self, x: Tensor) -> Tensor:
        return x + self.mean.to(x.dtype)
