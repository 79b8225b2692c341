"""Shared helpers of the Triton kernels: interpreter detection, dot precision, tile configs.

The interpreter (``TRITON_INTERPRET=1``) is decided by Triton when a kernel is *decorated*, so
it must be set before ``csd_fast.kernels`` is imported; :func:`interpreting` reads the same flag.
"""
from __future__ import annotations

import os
import time

import torch
import triton

COMPUTE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def interpreting() -> bool:
    """True when Triton kernels run in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def dot_precision() -> str:
    """``tl.dot`` ``input_precision`` for fp32 operands: TF32 on tensor cores, exact IEEE in the interpreter.

    (Ignored by Triton for fp16/bf16 operands, which always use the tensor cores.)
    """
    return "ieee" if interpreting() else "tf32"


def size_bucket(n: int) -> int:
    """The next power of two >= ``n``: autotune keys on buckets so every image size does not retune."""
    return triton.next_power_of_2(max(int(n), 1))


def tile_configs(gpu_tiles, interpreter_tiles, names=("BLOCK_M", "BLOCK_N", "BLOCK_K", "TILE_W")):
    """``triton.Config`` list from ``(*values of names, num_stages, num_warps)`` tuples: ``gpu_tiles``
    on a GPU, the few small ``interpreter_tiles`` under the interpreter (enough to run the
    autotuner's pruning, benchmarking and ``reset_to_zero`` on CPU)."""
    tiles = interpreter_tiles if interpreting() else gpu_tiles
    return [triton.Config(dict(zip(names, t[:-2])), num_stages=t[-2], num_warps=t[-1]) for t in tiles]


def wall_clock_bench(kernel_call, quantiles):
    """The autotuner's ``do_bench`` under the interpreter (Triton's needs a GPU): one timed call."""
    start = time.perf_counter()
    kernel_call()
    return [time.perf_counter() - start] * len(quantiles)


def bench_fn():
    """``do_bench`` for ``triton.autotune``: Triton's default on a GPU, :func:`wall_clock_bench` when interpreting."""
    return wall_clock_bench if interpreting() else None


def int32_extent(t: torch.Tensor, name: str) -> None:
    """Raise unless every offset within one image of ``t`` (dims 1..3) fits the kernels' int32 index math."""
    extent = sum((size - 1) * abs(stride) for size, stride in zip(t.shape[1:], t.stride()[1:]))
    if extent >= 2**31:
        raise ValueError(f"{name}: one image spans {extent + 1} elements, expected < 2**31 (int32 offsets); split the image")


def check_tensor(t: torch.Tensor, name: str, dtypes=COMPUTE_DTYPES, dim: int | None = None) -> None:
    """Raise a clear error when ``t`` is not a tensor of one of ``dtypes`` with ``dim`` dimensions."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name}: expected dtype in {[str(d) for d in dtypes]}, got {t.dtype}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{name}: expected a {dim}-D tensor, got shape {tuple(t.shape)}")
