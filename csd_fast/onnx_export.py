"""ONNX export of a student: ``export_onnx(student, "student.onnx")``, for ONNX Runtime, OpenVINO, TensorRT.

Through ``torch.onnx.export(..., dynamo=True)`` (needs the ``onnx`` and ``onnxscript`` packages:
``pip install csd_fast[onnx]``). The graph has one input ``lr`` ([B, 3, H, W] float in [0, 1])
and one output ``sr`` ([B, 3, sH, sW]); with ``dynamic=True`` the batch, height and width are
symbolic, so one file serves every image size. The weights are stored inside the one file, in
the student's dtype.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .models import SlimSRModel
from .student_io import student_at

MIN_OPSET = 18  # the dynamo exporter's lowest opset


class _OneInput(nn.Module):
    """``student(x)`` (its own width) as a module of one input, what the exporter traces."""

    def __init__(self, student: SlimSRModel):
        super().__init__()
        self.student = student

    def forward(self, x):
        return self.student(x)


def export_onnx(student: SlimSRModel, path, opset: int = MIN_OPSET, dynamic: bool = True, width: float | None = None,
                example_size: int = 32) -> Path:
    """Write ``student`` (an exported student, or a full model at ``width``) to ``path`` (.onnx), atomically.

    ``dynamic=False`` fixes the input to ``[1, 3, example_size, example_size]``. Returns the path.
    """
    if not isinstance(student, SlimSRModel):
        raise TypeError(f"student: expected a csd_fast slim model (e.g. load_student(path)), got {type(student).__name__}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"path: expected a file name ending in .onnx, got {str(path)!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset: expected an int >= {MIN_OPSET} (the dynamo exporter's lowest), got {opset!r}")
    if isinstance(example_size, bool) or not isinstance(example_size, int) or example_size < 2:
        raise ValueError(f"example_size: expected an int >= 2 (LR pixels), got {example_size!r}")
    model = student_at(student, width)
    module = _OneInput(model).eval()
    example = torch.rand(2 if dynamic else 1, 3, example_size, example_size, device=model._param_device(), dtype=model._param_dtype())
    shapes = None
    if dynamic:
        dims = {0: torch.export.Dim("batch", min=1), 2: torch.export.Dim("height", min=1), 3: torch.export.Dim("width", min=1)}
        shapes = {"x": dims}
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(f"export_onnx: needs {' and '.join(missing)}: pip install 'csd_fast[onnx]'")
    with _quiet_exporter():
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset, dynamic_shapes=shapes,
                                    input_names=["lr"], output_names=["sr"], verbose=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        program.save(str(tmp), external_data=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def _quiet_exporter():
    """Hide the exporter's notes that do not concern the user: the torchvision ops it skips (logged
    per op when torchvision is absent) and torch's own ``LeafSpec`` deprecation warning."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)
