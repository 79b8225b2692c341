"""Other CPU runtimes for ``bench/speed.py``: the student exported to ONNX and run by ONNX Runtime
and OpenVINO (optional extras: ``pip install onnxruntime openvino onnxscript``).

Each ``*_runner`` returns ``fn(x) -> Tensor`` or raises :class:`Unavailable` with the reason the
column is skipped. Fairness settings (issue 12): ONNX Runtime's intra-op threads do not spin after
a call (``session.intra_op.allow_spinning = 0``); OpenVINO runs one stream with the requested
threads, latency hint, fp32 or bf16 inference precision.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch


class Unavailable(RuntimeError):
    """A runtime column that cannot run here (not installed, export failed)."""


def export_onnx(model: torch.nn.Module, x: torch.Tensor, folder: Path) -> Path:
    """``model`` at the static input shape of ``x`` as ONNX (``torch.onnx.export(..., dynamo=True)``)."""
    path = folder / f"student_{'x'.join(map(str, x.shape))}.onnx"
    if not path.exists():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(model.float().eval(), (x,), dynamo=True, verbose=False)
            program.save(str(path))
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


def openvino_runner(path: Path, threads: int, precision: str):
    """``precision``: ``"f32"`` or ``"bf16"`` (OpenVINO's inference precision hint)."""
    try:
        import openvino as ov
    except ImportError as err:
        raise Unavailable("openvino not installed (pip install openvino)") from err
    core = ov.Core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise Unavailable("OpenVINO reports no BF16 capability on this CPU")
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
    })
    request = compiled.create_infer_request()
    return lambda x: torch.from_numpy(request.infer({0: x.numpy()})[0].copy())


def onnx_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="csd_fast_bench_")
