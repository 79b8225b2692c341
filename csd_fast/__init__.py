"""csd_fast: contrastive self-distillation (CSD) for compact super-resolution, served fast."""
__version__ = "0.1.0"
