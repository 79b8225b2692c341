"""Losses: the contrastive L1-ratio loss over VGG19 features, and its eager reference."""
from .reference import contrastive_ratio_reference, multi_tap_contrastive_reference

__all__ = ["contrastive_ratio_reference", "multi_tap_contrastive_reference"]
