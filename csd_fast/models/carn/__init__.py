"""CARN: the model (``model.py``), its presets, checkpoint formats (``formats.py``) and fast path (``plan.py``)."""
from ..registry import FAST_DTYPES, Architecture, register_arch
from .formats import FORMATS
from .model import Cascade, ResidualUnit, SlimCARN
from .plan import CARNPlan

ARCH = register_arch(Architecture(
    name="carn",
    model=SlimCARN,
    presets={
        "paper": dict(n_feats=64),
        "demo": dict(n_feats=32),
    },
    formats=FORMATS,
    plan=CARNPlan,
    dtypes=FAST_DTYPES,
))

__all__ = ["ARCH", "SlimCARN", "Cascade", "ResidualUnit", "CARNPlan"]
