"""CARN's fast path: the cascades write into two preallocated concatenation buffers (outer and
inner), so ``torch.cat`` never copies; each residual unit is one ``ops.res_block`` (``relu_out`` for the
corrected CARN, not for the official CSD one); both fuse over the concatenation as stored."""
from __future__ import annotations

from dataclasses import dataclass

from ..plan import FramePlan
from .model import ResidualUnit


@dataclass
class _Cascade:
    """``units``: ``(conv1, conv2)`` pairs, or nested cascades when ``nested``; ``fuses``: the 1x1 convs."""

    units: list
    fuses: list
    nested: bool


class CARNPlan(FramePlan):
    def __init__(self, model, ops):
        super().__init__(model, ops)
        self.unit_relu = not model.official_csd  # the official CSD CARN has no ReLU after the residual add
        self.cascade = self._pack(model.body)

    def _pack(self, node) -> _Cascade:
        pack = self.ops.pack
        nested = not isinstance(node.units[0], ResidualUnit)
        units = [self._pack(u) if nested else (pack(u.conv1), pack(u.conv2)) for u in node.units]
        return _Cascade(units, [pack(f) for f in node.fuse], nested)

    def features(self, x):
        n, _, h, w = x.shape
        c = self.channels
        bufs = [self.ops.empty(n, 4 * c, h, w, x.device) for _ in range(2)]  # outer and inner concatenations
        self.ops.conv(x, self.head, sub_mean=True, out=bufs[0][:, :c])
        return self._cascade(self.cascade, bufs, 0)

    def _cascade(self, node: _Cascade, bufs, depth, dest=None):
        """``o_i = relu(fuse_i(cat(x, b_1..b_i)))``, the input ``x`` in ``bufs[depth][:, :C]`` and each
        ``b_i`` written into the next slot; returns ``o_3`` (into ``dest`` if given)."""
        c, buf, ops = self.channels, bufs[depth], self.ops
        out = buf[:, :c]
        for i, (unit, fuse) in enumerate(zip(node.units, node.fuses)):
            slot = buf[:, (i + 1) * c:(i + 2) * c]
            if node.nested:  # its input (head output or o_{i-1}) is already in the inner buffer's first slot
                if i == 0:
                    bufs[depth + 1][:, :c].copy_(out)
                self._cascade(unit, bufs, depth + 1, dest=slot)
            else:
                conv1, conv2 = unit
                ops.res_block(out, conv1, conv2, relu_out=self.unit_relu, out=slot)
            target = dest if i == len(node.units) - 1 else (bufs[depth + 1][:, :c] if node.nested else None)
            out = ops.conv(buf[:, :(i + 2) * c], fuse, relu=True, out=target)
        return out
