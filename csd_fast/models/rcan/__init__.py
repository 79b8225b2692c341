"""RCAN: the model (``model.py``), its presets, checkpoint formats (``formats.py``) and fast path (``plan.py``).

Fast-path dtypes: the channel attention always runs in fp32; the residual stream is stored in the
compute dtype as in the eager model, which for large trained RCANs can exceed fp16's range
(65504): prefer bf16 for those.
"""
from ..registry import FAST_DTYPES, Architecture, register_arch
from .formats import FORMATS, rescale
from .model import RCAB, ChannelAttention, ResidualGroup, SlimRCAN
from .plan import RCANPlan

ARCH = register_arch(Architecture(
    name="rcan",
    model=SlimRCAN,
    presets={
        "paper": dict(n_feats=64, n_resgroups=10, n_resblocks=20, reduction=16),
        "demo": dict(n_feats=32, n_resgroups=2, n_resblocks=2, reduction=8),
    },
    formats=FORMATS,
    rescale=rescale,
    plan=RCANPlan,
    dtypes=FAST_DTYPES,
    tiling="approximate",  # the channel attention averages over the whole input
))

__all__ = ["ARCH", "SlimRCAN", "RCAB", "ChannelAttention", "ResidualGroup", "RCANPlan"]
