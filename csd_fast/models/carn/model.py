"""CARN (Ahn et al. 2018) as a channel-splitting network, in two variants.

Residual unit: ``relu(conv2(relu(conv1(x))) + x)``. Cascading block: for i = 1..3,
``b_i = unit_i(o_{i-1})``, ``c_i = cat(c_{i-1}, b_i)``, ``o_i = relu(fuse_i(c_i))`` with 1x1
``fuse_i`` over (i+1)·C channels (c_0 = o_0 = input). The network cascades three such blocks
the same way, then upsamples (conv + shuffle + ReLU) and maps back to RGB.

- ``SlimCARN`` (arch "carn"), the corrected CARN: the ReLUs of the original CARN paper (what
  original CARN checkpoints hold), and each 1x1 fusion sliced per concatenated part: its input
  is (i+1) blocks of C channels and the sub-network keeps the first int(r·C) channels *of each
  block* (``SlimConv2d(in_groups=i+1)``), so every weight meets the feature map it was trained on.
- ``SlimCARNCSD`` (arch "carn-csd"), the official CSD code's CARN, reproduced exactly (what the
  CSD paper's CARN numbers come from and what official CSD CARN checkpoints hold): no ReLU after
  the residual add (``conv2(relu(conv1(x))) + x``), no ReLU in the upsampler, and each fusion
  sliced as one prefix of the concatenation: its first int(r·(i+1)·C) input channels, which pairs
  the student's later blocks with weights of the teacher's earlier ones. Widths where that prefix
  is not (i+1)·int(r·C) channels make the official code fail; they are refused.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import SlimSRModel
from ..slim import DIV2K_RGB_MEAN, SlimConv2d, slim_channels


class ResidualUnit(nn.Module):
    """``[relu](conv2(relu(conv1(x))) + x)``: the final ReLU when ``relu_out`` (corrected CARN)."""

    def __init__(self, channels: int, relu_out: bool = True):
        super().__init__()
        self.conv1 = SlimConv2d(channels, channels)
        self.conv2 = SlimConv2d(channels, channels)
        self.relu_out = relu_out

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        y = self.conv2(F.relu(self.conv1(x, width)), width) + x
        return F.relu(y) if self.relu_out else y


class Cascade(nn.Module):
    """Three units cascaded through 1x1 fusions of the growing concatenation; ``per_part``: each
    fusion sliced per concatenated part (corrected), else as one prefix (official CSD)."""

    def __init__(self, channels: int, make_unit, per_part: bool = True):
        super().__init__()
        self.units = nn.ModuleList(make_unit() for _ in range(3))
        self.fuse = nn.ModuleList(
            SlimConv2d((i + 2) * channels, channels, 1, in_groups=i + 2 if per_part else 1) for i in range(3)
        )

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        cat, out = x, x
        for unit, fuse in zip(self.units, self.fuse):
            cat = torch.cat([cat, unit(out, width)], dim=1)
            out = F.relu(fuse(cat, width))
        return out


class SlimCARN(SlimSRModel):
    """The corrected CARN (module docstring)."""

    arch = "carn"
    official_csd = False

    def __init__(self, scale: int = 4, n_feats: int = 64, rgb_mean=DIV2K_RGB_MEAN):
        super().__init__()
        self.config = dict(scale=scale, n_feats=n_feats, rgb_mean=tuple(rgb_mean))
        corrected = not self.official_csd
        self._build_frame(scale, n_feats, rgb_mean, act_upsample=corrected)
        unit = partial(ResidualUnit, n_feats, relu_out=corrected)
        self.body = Cascade(n_feats, lambda: Cascade(n_feats, unit, corrected), corrected)

    def _forward(self, x: Tensor, width: float) -> Tensor:
        self._check_fusion_width(width)
        return self._run_frame(x, width, self.body)

    def _check_fusion_width(self, width: float) -> None:
        """The official CSD fusions take int(r·k·C) input channels of a k·int(r·C)-channel concatenation."""
        if not self.official_csd:
            return
        c = self.config["n_feats"]
        bad = [k for k in (2, 3, 4) if slim_channels(k * c, width) != k * slim_channels(c, width)]
        if bad:
            raise ValueError(
                f"width: {width} slices the official CSD CARN's {bad[0]}·{c}-channel fusion to "
                f"{slim_channels(bad[0] * c, width)} inputs, but the concatenation has {bad[0] * slim_channels(c, width)} "
                "(the official code fails there); expected a width where they agree, e.g. a multiple of 1/C"
            )

    def compact_config(self, width: float) -> dict:
        self._check_fusion_width(width)
        return dict(self.config, n_feats=slim_channels(self.config["n_feats"], width))


class SlimCARNCSD(SlimCARN):
    """The official CSD code's CARN, reproduced exactly (module docstring)."""

    arch = "carn-csd"
    official_csd = True
