"""RCAN's fast path: groups of RCABs, each ``ops.ca_residual(g, relu(conv1(g)), conv2, attention)``;
the channel attention is packed in fp32 (``csd_fast.backends.Attention``)."""
from __future__ import annotations

from ...backends import Attention
from ..plan import FramePlan


def pack_attention(ca) -> Attention:
    f32 = lambda t: t.detach().float().contiguous()
    down, up = ca.down, ca.up
    return Attention(f32(down.weight.flatten(1)), f32(down.bias), f32(up.weight.flatten(1)), f32(up.bias))


class RCANPlan(FramePlan):
    def __init__(self, model, ops):
        super().__init__(model, ops)
        pack = ops.pack
        self.groups = [([(pack(b.conv1), pack(b.conv2), pack_attention(b.ca)) for b in g.blocks], pack(g.conv)) for g in model.groups]
        self.body_conv = pack(model.body_conv)

    def features(self, x):
        return self.global_residual(x, self._groups, self.body_conv)

    def _groups(self, r):
        n, c = r.shape[:2]
        ops = self.ops
        pools = iter(ops.pools(sum(len(blocks) for blocks, _ in self.groups), n, c, r.device))
        for blocks, conv in self.groups:
            g = r
            for conv1, conv2, att in blocks:
                g = ops.ca_residual(g, ops.conv(g, conv1, relu=True), conv2, att, next(pools))
            r = ops.conv(g, conv, residual=r)
        return r
