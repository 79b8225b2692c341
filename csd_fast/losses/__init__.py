"""Losses: the contrastive L1-ratio loss over VGG19 features, and its eager reference."""
from .contrastive import ContrastiveLoss
from .reference import contrastive_ratio_reference, multi_tap_contrastive_reference
from .vgg import TAP_NAMES, TAP_WEIGHTS, VGG19Taps

__all__ = [
    "ContrastiveLoss", "VGG19Taps", "TAP_NAMES", "TAP_WEIGHTS",
    "contrastive_ratio_reference", "multi_tap_contrastive_reference",
]
