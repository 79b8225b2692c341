"""EDSR (Lim et al. 2017) as a channel-splitting network.

x -> sub_mean -> head -> [ResBlock x n] -> body_conv (+ head output) -> upsampler -> tail -> add_mean.
ResBlock: ``x + res_scale * conv2(relu(conv1(x)))``. The paper's teacher is 256 feats x 32
blocks, res_scale 0.1 (x4: 43.1M parameters; width 0.25: 2.7M, 16x fewer).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..base import SlimSRModel
from ..slim import DIV2K_RGB_MEAN, SlimConv2d, slim_channels


class ResBlock(nn.Module):
    def __init__(self, channels: int, res_scale: float):
        super().__init__()
        self.conv1 = SlimConv2d(channels, channels)
        self.conv2 = SlimConv2d(channels, channels)
        self.res_scale = res_scale

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        return x + self.res_scale * self.conv2(F.relu(self.conv1(x, width)), width)


class SlimEDSR(SlimSRModel):
    arch = "edsr"

    def __init__(self, scale: int = 4, n_feats: int = 256, n_resblocks: int = 32, res_scale: float = 0.1, rgb_mean=DIV2K_RGB_MEAN):
        super().__init__()
        self.config = dict(scale=scale, n_feats=n_feats, n_resblocks=n_resblocks, res_scale=res_scale, rgb_mean=tuple(rgb_mean))
        self._build_frame(scale, n_feats, rgb_mean)
        self.body = nn.ModuleList(ResBlock(n_feats, res_scale) for _ in range(n_resblocks))
        self.body_conv = SlimConv2d(n_feats, n_feats)

    def _body(self, h: Tensor, width: float) -> Tensor:
        r = h
        for block in self.body:
            r = block(r, width)
        return self.body_conv(r, width) + h

    def _forward(self, x: Tensor, width: float) -> Tensor:
        return self._run_frame(x, width, self._body)

    def compact_config(self, width: float) -> dict:
        return dict(self.config, n_feats=slim_channels(self.config["n_feats"], width))
