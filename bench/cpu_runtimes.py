"""Other CPU runtimes for ``bench/speed.py``: the student exported to ONNX (``csd_fast.onnx_export``,
dynamic batch and size) and run by ONNX Runtime and OpenVINO (optional extras:
``pip install 'csd_fast[bench]'``).

Each ``*_runner`` returns ``fn(x) -> Tensor`` or raises :class:`Unavailable` with the reason the
column is skipped. Fairness settings (issue 12): ONNX Runtime's intra-op threads do not spin after
a call (``session.intra_op.allow_spinning = 0``); OpenVINO runs one stream with the requested
threads, latency hint, fp32 or bf16 inference precision, the model reshaped to the static input
shape before compiling.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from csd_fast.onnx_export import export_onnx as _export


class Unavailable(RuntimeError):
    """A runtime column that cannot run here (not installed, export failed)."""


def export_onnx(student, folder: Path, name: str) -> Path:
    """``student`` as ``folder/name.onnx`` (dynamic shapes), exported once."""
    path = folder / f"{name}.onnx"
    if not path.exists():
        try:
            _export(student, path, dynamic=True)
        except Exception as err:  # noqa: BLE001  (a skipped column with its reason, not a crash)
            raise Unavailable(f"ONNX export failed: {type(err).__name__}: {str(err)[:160]}") from err
    return path


def ort_runner(path: Path, threads: int):
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise Unavailable("onnxruntime not installed (pip install onnxruntime)") from err
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: torch.from_numpy(sess.run(None, {name: x.numpy()})[0])


def openvino_runner(path: Path, threads: int, precision: str, shape):
    """``precision``: ``"f32"`` or ``"bf16"`` (OpenVINO's inference precision hint); ``shape``: the input's."""
    try:
        import openvino as ov
    except ImportError as err:
        raise Unavailable("openvino not installed (pip install openvino)") from err
    core = ov.Core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise Unavailable("OpenVINO reports no BF16 capability on this CPU")
    model = core.read_model(str(path))
    model.reshape({0: list(shape)})
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
    })
    request = compiled.create_infer_request()
    return lambda x: torch.from_numpy(request.infer({0: x.numpy()})[0].copy())


def onnx_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="csd_fast_bench_")
