"""Helpers of the Triton-interpreter tests: run a test file under ``TRITON_INTERPRET=1``, compare tensors.

Triton picks interpreter or GPU when a kernel is decorated (at import), so interpreter tests run
in a fresh ``python -m pytest`` process with the flag set, whatever the parent imported first.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def run_in_interpreter(test_file: str, timeout: float = 600) -> None:
    """Run ``tests/<test_file>`` with pytest in a subprocess under the interpreter; fail with its output."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / test_file)]
    with tempfile.TemporaryDirectory() as cache:  # a fresh autotune cache: every run tunes
        env = dict(os.environ, TRITON_INTERPRET="1", CSD_FAST_CACHE=cache)
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    print(proc.stdout[-500:])
    assert proc.returncode == 0, f"{test_file} failed under TRITON_INTERPRET=1:\n{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, what: str = "") -> None:
    """allclose in fp32 that reports how many elements differ, the worst one and where."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().float().cpu(), expected.detach().float().cpu()
    bad = ~torch.isclose(a, e, atol=atol, rtol=rtol)
    if bad.any():
        err = (a - e).abs()
        worst = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{bad.numel()} elements differ (atol={atol}, rtol={rtol}); "
            f"max |diff| {err.max().item():.3g} at {worst}: got {a[worst].item():.6g}, expected {e[worst].item():.6g}"
        )
