"""CARN (Ahn et al. 2018) as a channel-splitting network.

Residual unit: ``relu(conv2(relu(conv1(x))) + x)``. Cascading block: for i = 1..3,
``b_i = unit_i(o_{i-1})``, ``c_i = cat(c_{i-1}, b_i)``, ``o_i = relu(fuse_i(c_i))`` with 1x1
``fuse_i`` over (i+1)·C channels (c_0 = o_0 = input). The network cascades three such blocks
the same way, then upsamples (conv + shuffle + ReLU) and maps back to RGB.

Slicing the 1x1 fusions: their input is a concatenation of (i+1) blocks of C channels, and the
sub-network keeps the first int(r·C) channels *of each block* (``SlimConv2d(in_groups=i+1)``).
The official CSD code slices the first int(r·(i+1)·C) input channels instead, which pairs
weights with the wrong feature maps; we do not reproduce that.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import SlimSRModel
from ..slim import DIV2K_RGB_MEAN, SlimConv2d, slim_channels


class ResidualUnit(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = SlimConv2d(channels, channels)
        self.conv2 = SlimConv2d(channels, channels)

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x, width)), width) + x)


class Cascade(nn.Module):
    """Three units cascaded through 1x1 fusions of the growing concatenation."""

    def __init__(self, channels: int, make_unit):
        super().__init__()
        self.units = nn.ModuleList(make_unit() for _ in range(3))
        self.fuse = nn.ModuleList(SlimConv2d((i + 2) * channels, channels, 1, in_groups=i + 2) for i in range(3))

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        cat, out = x, x
        for unit, fuse in zip(self.units, self.fuse):
            cat = torch.cat([cat, unit(out, width)], dim=1)
            out = F.relu(fuse(cat, width))
        return out


class SlimCARN(SlimSRModel):
    arch = "carn"

    def __init__(self, scale: int = 4, n_feats: int = 64, rgb_mean=DIV2K_RGB_MEAN):
        super().__init__()
        self.config = dict(scale=scale, n_feats=n_feats, rgb_mean=tuple(rgb_mean))
        self._build_frame(scale, n_feats, rgb_mean, act_upsample=True)
        self.body = Cascade(n_feats, lambda: Cascade(n_feats, lambda: ResidualUnit(n_feats)))

    def _forward(self, x: Tensor, width: float) -> Tensor:
        return self._run_frame(x, width, self.body)

    def compact_config(self, width: float) -> dict:
        return dict(self.config, n_feats=slim_channels(self.config["n_feats"], width))
