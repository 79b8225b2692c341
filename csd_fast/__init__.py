"""csd_fast: contrastive self-distillation (CSD) for compact super-resolution, served fast.

    from csd_fast import CSDTrainer, SlimEDSR, accelerate
    model = SlimEDSR(scale=4, n_feats=256, n_resblocks=32, res_scale=0.1)
    trainer = CSDTrainer(model, width=0.25)
    trainer.fit(train_set, steps=..., val_set=...)
    fast = accelerate(model.export(width=0.25))
"""
from importlib import import_module

__version__ = "0.1.0"

# Public name -> module that defines it; imported on first use so `import csd_fast` stays light.
_EXPORTS = {
    "SlimEDSR": "models", "SlimRCAN": "models", "SlimCARN": "models", "SlimSRModel": "models",
    "build_model": "models", "model_names": "models",
    "ContrastiveLoss": "losses", "VGG19Taps": "losses",
    "Negatives": "negatives", "make_negatives": "negatives",
    "CSDTrainer": "trainer", "TrainOptions": "options", "KDTrainer": "kd", "DMMLoss": "kd",
    "DynamicNegatives": "history", "scaled_schedule": "history", "degrade": "degradations",
    "load_student": "student_io", "save_student": "student_io", "load_model": "student_io",
    "describe_student": "student_io", "StudentDescriptor": "student_io", "export_onnx": "onnx_export",
    "load_teacher": "convert", "load_teacher_state": "convert",
    "self_ensemble": "inference", "tiled_forward": "inference",
    "psnr_y": "metrics", "ssim_y": "metrics",
    "accelerate": "fast", "FastStudent": "fast",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'csd_fast' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
