"""Channel-splitting SR models: slim layers, one folder per architecture (EDSR, RCAN, CARN), and the
registry they are entered in (``registry.py``)."""
from .base import SlimSRModel, check_lr_input
from .registry import (
    PRESETS, Architecture, architectures, build_model, get_arch, model_from_config, model_names, register_arch,
    register_model, rescale_state,
)
from .slim import SlimConv2d, SlimUpsampler, check_width, slim_channels, upsample_factors
from .edsr import SlimEDSR  # noqa: E402  (each architecture registers itself on import)
from .rcan import SlimRCAN  # noqa: E402
from .carn import SlimCARN, SlimCARNCSD  # noqa: E402

__all__ = [
    "SlimSRModel", "SlimEDSR", "SlimRCAN", "SlimCARN", "SlimCARNCSD", "SlimConv2d", "SlimUpsampler",
    "build_model", "model_from_config", "model_names", "register_model", "register_arch", "get_arch",
    "architectures", "Architecture", "PRESETS", "rescale_state", "check_lr_input", "check_width", "slim_channels", "upsample_factors",
]
