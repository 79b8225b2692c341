"""CARN: the model (``model.py``) in two variants, the corrected CARN ("carn") and the official CSD
code's CARN ("carn-csd"), their presets, checkpoint formats (``formats.py``) and fast path (``plan.py``)."""
from ..registry import FAST_DTYPES, Architecture, register_arch
from .formats import CSD_FORMATS, FORMATS
from .model import Cascade, ResidualUnit, SlimCARN, SlimCARNCSD
from .plan import CARNPlan

PRESETS = {
    "paper": dict(n_feats=64),
    "demo": dict(n_feats=32),
}
ARCH = register_arch(Architecture(name="carn", model=SlimCARN, presets=PRESETS, formats=FORMATS, plan=CARNPlan,
                                  dtypes=FAST_DTYPES))
CSD_ARCH = register_arch(Architecture(name="carn-csd", model=SlimCARNCSD, presets=PRESETS, formats=CSD_FORMATS,
                                      plan=CARNPlan, dtypes=FAST_DTYPES))

__all__ = ["ARCH", "CSD_ARCH", "SlimCARN", "SlimCARNCSD", "Cascade", "ResidualUnit", "CARNPlan"]
