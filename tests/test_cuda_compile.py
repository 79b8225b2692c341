"""The CUDA sources of the contrastive op compile standalone with nvcc (no GPU, no torch headers).

A CPU machine cannot run them on a GPU; this proves they build for Ampere (sm_80) and Hopper
(sm_90) without warnings. Their numerics are checked on the CPU through the SIMT emulator in
test_cuda_on_cpu.py, and on a GPU in test_contrastive_op.py (marked ``gpu``).
"""
import shutil
import subprocess
from pathlib import Path

import pytest

CUDA_SOURCES = sorted((Path(__file__).resolve().parents[1] / "csrc" / "cuda").glob("*.cu"))
NVCC = shutil.which("nvcc")


def test_cuda_sources_exist():
    assert CUDA_SOURCES, "no csrc/cuda/*.cu found"


@pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH: cannot compile-check the CUDA sources")
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: p.name)
def test_nvcc_compiles(source, tmp_path):
    command = [
        NVCC, "-c", str(source), "-o", str(tmp_path / f"{source.stem}.o"), "-O3",
        "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
        "--Werror", "all-warnings", "-Xcompiler", "-Wall",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / f"{source.stem}.o").stat().st_size > 0
