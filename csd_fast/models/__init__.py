"""Channel-splitting SR models: slim layers, EDSR, RCAN, CARN, and a registry."""
from .base import SlimSRModel, check_lr_input
from .carn import SlimCARN
from .edsr import SlimEDSR
from .rcan import SlimRCAN
from .registry import PRESETS, build_model, model_from_config, model_names, register_model
from .slim import SlimConv2d, SlimUpsampler, check_width, slim_channels, upsample_factors

__all__ = [
    "SlimSRModel", "SlimEDSR", "SlimRCAN", "SlimCARN", "SlimConv2d", "SlimUpsampler",
    "build_model", "model_from_config", "model_names", "register_model", "PRESETS",
    "check_lr_input", "check_width", "slim_channels", "upsample_factors",
]
