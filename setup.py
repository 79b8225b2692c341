"""Build csd_fast: the Python package, ``kernels/`` as ``csd_fast.kernels``, and ``csd_fast._C``.

``_C`` (the contrastive-loss op) is always built for the CPU (C++/OpenMP); its CUDA part is
added only when the installed torch has CUDA and nvcc is found. Install with
``pip install --no-build-isolation -e .`` so the extension builds against the installed torch
(pyproject.toml lists the build requirements for an isolated build and says why not to).
Extras: ``train`` (matplotlib, pyyaml, scikit-image), ``triton``, ``onnx``, ``test``, ``all``, ``bench`` (onnx + openvino).
"""
import glob
import os

from setuptools import find_packages, setup


def _extensions():
    """``csd_fast._C``: csrc/*.cpp always; csrc/cuda/*.cu and the CUDA bindings csrc/cuda/*.cpp
    only with a CUDA torch and nvcc (set CSD_FAST_NO_CUDA=1 to skip them; without a visible GPU
    and without TORCH_CUDA_ARCH_LIST they are built for sm_80 and sm_90 + PTX). The C++ standard
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
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            # no GPU to read the architecture from (a build host, or pip's isolated build env with a
            # CUDA torch): Ampere and Hopper code, plus PTX for newer GPUs
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
    ext = ext_cls("csd_fast._C", sources, extra_compile_args=extra, extra_link_args=["-fopenmp"])
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
TRAIN_EXTRAS = ["matplotlib>=3.6", "pyyaml>=6.0", "scikit-image>=0.21"]  # imported lazily (csd_fast.optional)
ONNX_EXTRAS = ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.17"]

setup(
    name="csd_fast",
    version="0.1.0",
    description="Contrastive self-distillation for compact super-resolution, served by fused kernels",
    packages=find_packages(include=["csd_fast", "csd_fast.*"]) + ["csd_fast.kernels"],
    package_dir={"csd_fast.kernels": "kernels"},
    python_requires=">=3.10",
    license="MIT",
    # inference (load_student, accelerate, upscale, eval, export) needs only these
    install_requires=[
        "torch>=2.11,<2.15",
        "numpy>=1.24",
        "pillow>=10.1",
        "tqdm>=4.60",
        "safetensors>=0.4",
    ],
    extras_require={
        "train": TRAIN_EXTRAS,  # plots, YAML configs, the bundled photographs
        "triton": ["triton>=3.6,<3.10"],
        "onnx": ONNX_EXTRAS,  # export_onnx; tests check it on ONNX Runtime
        "test": ["pytest>=7", *TRAIN_EXTRAS],
        "all": [*TRAIN_EXTRAS, *ONNX_EXTRAS, "triton>=3.6,<3.10", "pytest>=7"],
        "bench": [*ONNX_EXTRAS, "openvino>=2024.0"],  # bench/speed.py on CPU: ONNX Runtime and OpenVINO columns
    },
    entry_points={"console_scripts": ["csd-fast=csd_fast.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
