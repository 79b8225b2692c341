"""The fast-path frame every architecture shares, over the backend protocol of ``csd_fast.backends``.

``out = add_mean(tail(upsampler(features(x))))``; an architecture's plan (``<arch>/plan.py``)
packs its body in ``__init__`` and implements ``features`` (head conv and body).
"""
from __future__ import annotations

from torch import Tensor


class FramePlan:
    """Packs the head, upsampler and tail of ``model`` with ``ops`` (a ``csd_fast.backends.Backend``)."""

    def __init__(self, model, ops):
        self.ops = ops
        self.channels = model.head.out_channels
        self.head, self.tail = (ops.pack(conv) for conv in model.unit_range_frame())  # [0, 1] in and out
        self.up = [(ops.pack(conv, f), f) for conv, f in zip(model.upsampler.convs, model.upsampler.factors)]
        self.up_relu = model.upsampler.act

    def features(self, x: Tensor) -> Tensor:
        """Head and body on the NCHW [0, 1] input ``x`` (the head subtracts the mean)."""
        raise NotImplementedError

    def global_residual(self, x: Tensor, body, body_conv) -> Tensor:
        """EDSR/RCAN: ``h + body_conv(body(h))`` with ``h = head(x - mean)``."""
        head = self.ops.conv(x, self.head, sub_mean=True)
        return self.ops.conv(body(head), body_conv, residual=head)

    def run(self, x: Tensor, out: Tensor) -> Tensor:
        """The network on ``x``, its [B, 3, sH, sW] result written into ``out``."""
        r = self.features(x)
        for conv, f in self.up:
            r = self.ops.conv(r, conv, shuffle=f, relu=self.up_relu)
        return self.ops.conv(r, self.tail, add_mean=True, out=out)
