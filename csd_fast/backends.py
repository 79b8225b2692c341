"""The backend protocol the fast-path plans are written over, and its two implementations.

A plan (``csd_fast/models/<arch>/plan.py``) packs each conv of a student once with
:meth:`Backend.pack` and runs the network as a sequence of the calls below; a backend decides
the layout and the kernels. Activations are 4-D NCHW-indexed tensors in ``backend.dtype`` (both
backends here store them channels_last); slices along dim 1 (CARN's concatenation buffers) must
be accepted as inputs and as ``out``.

- ``pack(conv, shuffle=1) -> PackedConv``: the weights of an ``nn.Conv2d`` in the backend's layout
  (``shuffle > 1``: the conv feeds ``PixelShuffle(shuffle)``).
- ``conv(x, layer, *, out=None, residual=None, res_scale=1.0, relu=False, shuffle=1, sub_mean=False,
  add_mean=False, pool=None)``: ``out = [relu](residual + res_scale * shuffle(conv(x [- mean]))) [+ mean]``;
  ``sub_mean`` reads the NCHW [0, 1] network input, ``add_mean`` writes the NCHW output, ``pool``
  (from :meth:`pools`) accumulates the per-channel sums of the result (RCAN's attention).
- ``res_block(x, conv1, conv2, *, res_scale=1.0, relu_out=False, out=None)``:
  ``[relu](x + res_scale * conv2(relu(conv1(x))))`` (EDSR block, CARN residual unit); by default two
  ``conv`` calls, a backend may fuse them.
- ``ca_residual(x, t, conv2, att, pool)``: RCAN's ``x + r * sigmoid(up(relu(down(mean(r)))))`` with
  ``r = conv2(t)``, the attention in fp32.
- ``pools(count, n, c, device)``: ``count`` pooling accumulators for one forward (or Nones).
- ``empty(n, c, h, w, device)``: an activation buffer.

``"eager"`` runs this on PyTorch ops (the CPU path); ``"triton"`` on the fused kernels of
``csd_fast.kernels``. New backends subclass :class:`Backend` and are added to ``BACKEND_CLASSES``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class PackedConv:
    """One conv of a plan: ``weight`` in the backend's layout and dtype, its ``bias``, kernel size ``k``."""

    weight: Tensor
    bias: Optional[Tensor]
    k: int


@dataclass
class Attention:
    """RCAN channel attention in fp32: ``w_down [C_r, C]``, ``w_up [C, C_r]`` and their biases."""

    w_down: Tensor
    b_down: Tensor
    w_up: Tensor
    b_up: Tensor


class Backend:
    """Base of the backends: ``dtype`` (the compute dtype) and ``mean`` (the RGB mean shift) given at
    construction; subclasses implement ``pack`` and ``conv`` (module docstring) and may override the rest."""

    name = ""

    def __init__(self, dtype: torch.dtype, mean: Tensor):
        self.dtype = dtype

    def pack(self, conv: nn.Conv2d, shuffle: int = 1) -> PackedConv:
        raise NotImplementedError

    def conv(self, x, layer, *, out=None, residual=None, res_scale=1.0, relu=False, shuffle=1, sub_mean=False,
             add_mean=False, pool=None):
        raise NotImplementedError

    def res_block(self, x, conv1, conv2, *, res_scale=1.0, relu_out=False, out=None):
        """``[relu](x + res_scale * conv2(relu(conv1(x))))``, written into ``out`` when given."""
        return self.conv(self.conv(x, conv1, relu=True), conv2, residual=x, res_scale=res_scale, relu=relu_out, out=out)

    def ca_residual(self, x, t, conv2, att: Attention, pool):
        """``x + r * sigmoid(up(relu(down(mean(r)))))``, ``r = conv2(t)``; the attention in fp32 on torch ops."""
        r = self.conv(t, conv2)
        s = torch.sigmoid(F.linear(F.relu(F.linear(r.float().mean((2, 3)), att.w_down, att.b_down)), att.w_up, att.b_up))
        return torch.addcmul(x, r, s.to(r.dtype)[:, :, None, None])

    def pools(self, count, n, c, device):
        return [None] * count

    def empty(self, n, c, h, w, device):
        return torch.empty(n, c, h, w, device=device, dtype=self.dtype, memory_format=torch.channels_last)


class EagerBackend(Backend):
    """The protocol on PyTorch ops: channels_last activations in ``dtype``."""

    name = "eager"

    def __init__(self, dtype: torch.dtype, mean: Tensor):
        super().__init__(dtype, mean)
        self.mean = mean.view(1, 3, 1, 1).to(dtype)

    def pack(self, conv: nn.Conv2d, shuffle: int = 1) -> PackedConv:
        """Contiguous weights and bias in ``dtype`` (torch's channel order, whatever ``shuffle``)."""
        w = conv.weight.detach().to(self.dtype).contiguous(memory_format=torch.channels_last)
        b = None if conv.bias is None else conv.bias.detach().to(self.dtype)
        return PackedConv(w, b, conv.kernel_size[0])

    def conv(self, x, layer, *, out=None, residual=None, res_scale=1.0, relu=False, shuffle=1, sub_mean=False,
             add_mean=False, pool=None):
        """``out = [relu](residual + res_scale * shuffle(conv(x [- mean]))) [+ mean]`` (``pool`` unused); the
        epilogue in place on the conv's fresh result (one pass each, no new buffers)."""
        if sub_mean:
            x = x.to(self.dtype, memory_format=torch.channels_last) - self.mean
        y = F.conv2d(x, layer.weight, layer.bias, padding=layer.k // 2)
        if shuffle > 1:
            y = F.pixel_shuffle(y, shuffle)
        if residual is not None:
            torch.add(residual, y, alpha=res_scale, out=y)
        if relu:
            y.relu_()
        if add_mean:
            y.add_(self.mean)
        if out is None:
            return y
        return out.copy_(y)


class TritonBackend(Backend):
    """The protocol on the fused kernels (``csd_fast.kernels``, imported on first use)."""

    name = "triton"

    def __init__(self, dtype: torch.dtype, mean: Tensor):
        from csd_fast import kernels  # decorating the kernels reads TRITON_INTERPRET
        from csd_fast.kernels import conv2d_persistent

        super().__init__(dtype, mean)
        self.k = kernels
        self.persistent = conv2d_persistent
        self.mean = mean.reshape(3).float().contiguous()

    def pack(self, conv: nn.Conv2d, shuffle: int = 1) -> PackedConv:
        """K-major weights in ``dtype``, fp32 bias; pixel-shuffle column order for ``shuffle > 1``."""
        k = self.k
        return PackedConv(k.pack_conv_weight(conv.weight, self.dtype, shuffle), k.pack_conv_bias(conv.bias, shuffle), conv.kernel_size[0])

    def conv(self, x, layer, *, out=None, residual=None, res_scale=1.0, relu=False, shuffle=1, sub_mean=False,
             add_mean=False, pool=None):
        """``conv2d`` with the epilogues; the weight-stationary persistent kernel for the body convs where
        the static report estimates it faster than v2 (``conv2d_persistent.MODEL_FASTER``)."""
        mean_in, mean_out = (self.mean if sub_mean else None), (self.mean if add_mean else None)
        c_in, c_out = x.shape[1], layer.weight.shape[1]
        persistent = (self.persistent.handles(layer.k, c_in, c_out, shuffle, pool, mean_in, mean_out)
                      and self.persistent.model_prefers(c_in, layer.weight.dtype))
        return self.k.conv2d(
            x, layer.weight, layer.bias, out=out, residual=residual, res_scale=res_scale, relu=relu, shuffle=shuffle,
            mean_in=mean_in, mean_out=mean_out, pool=pool, persistent=persistent,
        )

    def ca_residual(self, x, t, conv2, att: Attention, pool):
        r = self.conv(t, conv2, pool=pool)
        return self.k.ca_residual(x, r, pool, att.w_down, att.b_down, att.w_up, att.b_up)

    def pools(self, count, n, c, device):
        """Zeroed fp32 per-channel sums, one [N, C] slice per RCAB (one memset per forward)."""
        return list(torch.zeros(count, n, c, device=device, dtype=torch.float32).unbind(0))


BACKEND_CLASSES: dict[str, type[Backend]] = {"triton": TritonBackend, "eager": EagerBackend}
