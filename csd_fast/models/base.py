"""The common contract of slim SR models: input checks, ``forward(x, width)`` and ``export``.

Units (the ``img_range`` idea of EDSR-PyTorch and BasicSR): the API takes and returns [0, 1]
images, but the network computes on the 8-bit scale,
``y = tail(upsampler(body(head((x - mean) * 255)))) / 255 + mean``, so its parameters are the
official codes' parameters: their checkpoints load without rescaling, and an optimizer step
moves each parameter as the official step does (Adam is not scale-invariant per parameter).
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .slim import MeanShift, SlimConv2d, SlimUpsampler, check_width, upsample_factors


def check_lr_input(x: Tensor, name: str = "lr") -> None:
    """An LR batch must be a floating [B, 3, H, W] tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected a 4-D [B, 3, H, W] tensor, got shape {tuple(x.shape)}")
    if x.shape[1] != 3:
        raise ValueError(f"{name}: expected 3 (RGB) channels in dim 1, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor in [0, 1], got dtype {x.dtype}")


def scale_biases(key: str, t: Tensor, factor: float) -> Tensor:
    """A parameter of a conv + ReLU network after its internal pixel scale is multiplied by ``factor``
    (same function): biases x factor, weights unchanged (ReLU and residual adds commute with scaling)."""
    return t * factor if key.endswith(".bias") else t


class SlimSRModel(nn.Module):
    """Base of SlimEDSR / SlimRCAN / SlimCARN.

    Subclasses store their constructor arguments in ``self.config``, implement ``_forward(x, width)``
    on mean-shifted input, and ``compact_config(width)``: the arguments of the same architecture
    at the sub-network's channel counts.
    """

    arch: str = ""
    img_range: float = 255.0  # the network's internal pixel scale (module docstring)

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        """[B,3,H,W] in [0,1] -> [B,3,sH,sW]; ``width`` selects the channel-split sub-network."""
        check_lr_input(x)
        return self._forward(x, check_width(width))

    def _build_frame(self, scale: int, n_feats: int, rgb_mean, act_upsample: bool = False) -> None:
        """The layers every architecture shares: mean shift, head conv, upsampler, tail conv."""
        upsample_factors(scale)
        self.mean_shift = MeanShift(rgb_mean)
        self.head = SlimConv2d(3, n_feats)
        self.upsampler = SlimUpsampler(scale, n_feats, act=act_upsample)
        self.tail = SlimConv2d(n_feats, 3, fixed_out=True)

    def _run_frame(self, x: Tensor, width: float, body) -> Tensor:
        """``tail(upsampler(body(head((x - mean) * img_range)))) / img_range + mean`` at ``width``."""
        h = self.head(self.mean_shift.sub(x) * self.img_range, width)
        return self.mean_shift.add(self.tail(self.upsampler(body(h, width), width), width) / self.img_range)

    @torch.no_grad()
    def unit_range_frame(self) -> tuple[SlimConv2d, SlimConv2d]:
        """Copies of ``head`` and ``tail`` with ``img_range`` folded in, for code that runs the frame on
        [0, 1] input without the two scalings (the fast path): ``head'(x - mean) = head((x - mean) * R)`` (weight x R)
        and ``tail'(r) = tail(r) / R`` (weight and bias / R); the body is unchanged."""
        head, tail = copy.deepcopy(self.head), copy.deepcopy(self.tail)
        head.weight.mul_(self.img_range)
        tail.weight.div_(self.img_range)
        tail.bias.div_(self.img_range)
        return head.requires_grad_(False), tail.requires_grad_(False)

    @property
    def scale(self) -> int:
        return self.config["scale"]

    def compact_config(self, width: float) -> dict:
        raise NotImplementedError

    @torch.no_grad()
    def export(self, width: float) -> "SlimSRModel":
        """A standalone compact model with its own contiguous weights equal to the sub-network at ``width``.

        Its output equals ``self(x, width)``; at its own width 1.0 it runs no slicing.
        """
        width = check_width(width)
        compact = type(self)(**self.compact_config(width)).to(
            device=self._param_device(), dtype=self._param_dtype()
        )
        mine = [m for m in self.modules() if isinstance(m, SlimConv2d)]
        theirs = [m for m in compact.modules() if isinstance(m, SlimConv2d)]
        assert len(mine) == len(theirs), "compact_config must keep the layer structure"
        for src, dst in zip(mine, theirs):
            w, b = src.sliced(dst.in_channels, width)
            if w.shape != dst.weight.shape:
                raise RuntimeError(f"export: sliced weight {tuple(w.shape)} does not fit {tuple(dst.weight.shape)}")
            dst.weight.copy_(w)
            if b is not None:
                dst.bias.copy_(b)
        for name, buf in self.named_buffers():
            compact.get_buffer(name).copy_(buf)
        compact.export_info = {"width": width}  # an exported student: accelerate/eval refuse other widths
        return compact.train(self.training)

    def num_params(self, width: float = 1.0) -> int:
        """Parameters of the sub-network at ``width`` (of the exported student)."""
        if width == 1.0:
            return sum(p.numel() for p in self.parameters())
        with torch.device("meta"):
            compact = type(self)(**self.compact_config(check_width(width)))
        return sum(p.numel() for p in compact.parameters())

    def _param_device(self):
        return next(self.parameters()).device

    def _param_dtype(self):
        return next(self.parameters()).dtype

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())
