"""EDSR: the model (``model.py``), its presets, checkpoint formats (``formats.py``) and fast path (``plan.py``)."""
from ..registry import FAST_DTYPES, Architecture, register_arch
from .formats import FORMATS
from .model import ResBlock, SlimEDSR
from .plan import EDSRPlan

ARCH = register_arch(Architecture(
    name="edsr",
    model=SlimEDSR,
    presets={
        "paper": dict(n_feats=256, n_resblocks=32, res_scale=0.1),
        "baseline": dict(n_feats=64, n_resblocks=16, res_scale=1.0),
        "demo": dict(n_feats=64, n_resblocks=4, res_scale=1.0),
    },
    formats=FORMATS,
    plan=EDSRPlan,
    dtypes=FAST_DTYPES,
))

__all__ = ["ARCH", "SlimEDSR", "ResBlock", "EDSRPlan"]
