"""EDSR's fast path: ``h + body_conv(blocks(h))``, each block one ``ops.res_block`` (a backend may fuse it)."""
from __future__ import annotations

from ..plan import FramePlan


class EDSRPlan(FramePlan):
    def __init__(self, model, ops):
        super().__init__(model, ops)
        self.blocks = [(ops.pack(b.conv1), ops.pack(b.conv2), float(b.res_scale)) for b in model.body]
        self.body_conv = ops.pack(model.body_conv)

    def features(self, x):
        return self.global_residual(x, self._blocks, self.body_conv)

    def _blocks(self, r):
        for conv1, conv2, res_scale in self.blocks:
            r = self.ops.res_block(r, conv1, conv2, res_scale=res_scale)
        return r
