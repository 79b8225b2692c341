"""Build csd_fast: the Python package, ``kernels/`` as ``csd_fast.kernels``, and ``csd_fast._C``.

``_C`` (the contrastive-loss op) is always built for the CPU (C++/OpenMP); its CUDA part is
added only when the installed torch has CUDA and nvcc is found. Install with
``pip install --no-build-isolation -e .`` so the extension builds against the installed torch.
"""
import glob
import os

from setuptools import find_packages, setup


def _extensions():
    """``csd_fast._C``: csrc/*.cpp always; csrc/cuda/*.cu and the CUDA bindings csrc/cuda/*.cpp
    only with a CUDA torch and nvcc (set CSD_FAST_NO_CUDA=1 to skip them). The C++ standard
    comes from torch's cpp_extension (torch >= 2.11 headers need C++20)."""
    import torch
    from torch.utils import cpp_extension

    sources = sorted(glob.glob("csrc/*.cpp"))
    if not sources:
        return [], {}
    extra = {"cxx": ["-O3", "-fopenmp"]}
    ext_cls = cpp_extension.CppExtension
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
    want_cuda = os.environ.get("CSD_FAST_NO_CUDA", "0") != "1"
    if want_cuda and cuda_sources and torch.version.cuda and cpp_extension.CUDA_HOME:
        ext_cls = cpp_extension.CUDAExtension
        sources += cuda_sources
        extra["nvcc"] = ["-O3"]
    ext = ext_cls("csd_fast._C", sources, extra_compile_args=extra, extra_link_args=["-fopenmp"])
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="csd_fast",
    version="0.1.0",
    description="Contrastive self-distillation for compact super-resolution, served by fused kernels",
    packages=find_packages(include=["csd_fast", "csd_fast.*"]) + ["csd_fast.kernels"],
    package_dir={"csd_fast.kernels": "kernels"},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.11,<2.15",
        "numpy>=1.24",
        "pillow>=9.0",
        "tqdm>=4.60",
        "safetensors>=0.4",
        "matplotlib>=3.6",
        "pyyaml>=6.0",
        "scikit-image>=0.21",
    ],
    extras_require={
        "triton": ["triton>=3.6,<3.10"],
        "test": ["pytest>=7"],
        "onnx": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.17"],  # export_onnx; tests check it on ONNX Runtime
        "bench": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.17", "openvino>=2024.0"],  # bench/speed.py on CPU
    },
    entry_points={"console_scripts": ["csd-fast=csd_fast.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
