"""RCAN (Zhang et al. 2018) as a channel-splitting network.

RCAB: ``x + CA(conv2(relu(conv1(x))))``, CA(r) = ``r * sigmoid(up(relu(down(avgpool(r)))))`` with
1x1 convs C -> C/reduction -> C (both slice with the width). Residual group: RCABs, a conv,
plus the group input. Body: groups, a conv, plus the head output. Paper: 10 groups x 20 RCAB,
64 feats, reduction 16.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import SlimSRModel
from ..slim import DIV2K_RGB_MEAN, SlimConv2d, slim_channels


class ChannelAttention(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.down = SlimConv2d(channels, squeezed, 1)
        self.up = SlimConv2d(squeezed, channels, 1)

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        y = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.up(F.relu(self.down(y, width)), width))


class RCAB(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.conv1 = SlimConv2d(channels, channels)
        self.conv2 = SlimConv2d(channels, channels)
        self.ca = ChannelAttention(channels, squeezed)

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        return x + self.ca(self.conv2(F.relu(self.conv1(x, width)), width), width)


class ResidualGroup(nn.Module):
    def __init__(self, channels: int, squeezed: int, n_resblocks: int):
        super().__init__()
        self.blocks = nn.ModuleList(RCAB(channels, squeezed) for _ in range(n_resblocks))
        self.conv = SlimConv2d(channels, channels)

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        r = x
        for block in self.blocks:
            r = block(r, width)
        return x + self.conv(r, width)


class SlimRCAN(SlimSRModel):
    arch = "rcan"

    def __init__(
        self, scale: int = 4, n_feats: int = 64, n_resgroups: int = 10, n_resblocks: int = 20,
        reduction: int = 16, ca_channels: int | None = None, rgb_mean=DIV2K_RGB_MEAN,
    ):
        super().__init__()
        ca_channels = ca_channels or max(1, n_feats // reduction)
        self.config = dict(
            scale=scale, n_feats=n_feats, n_resgroups=n_resgroups, n_resblocks=n_resblocks,
            reduction=reduction, ca_channels=ca_channels, rgb_mean=tuple(rgb_mean),
        )
        self._build_frame(scale, n_feats, rgb_mean)
        self.groups = nn.ModuleList(ResidualGroup(n_feats, ca_channels, n_resblocks) for _ in range(n_resgroups))
        self.body_conv = SlimConv2d(n_feats, n_feats)

    def _body(self, h: Tensor, width: float) -> Tensor:
        r = h
        for group in self.groups:
            r = group(r, width)
        return self.body_conv(r, width) + h

    def _forward(self, x: Tensor, width: float) -> Tensor:
        return self._run_frame(x, width, self._body)

    def compact_config(self, width: float) -> dict:
        c = self.config
        return dict(c, n_feats=slim_channels(c["n_feats"], width), ca_channels=slim_channels(c["ca_channels"], width))
