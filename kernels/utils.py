"""Shared helpers of the Triton kernels: interpreter detection, dot precision, tile configs.

The interpreter (``TRITON_INTERPRET=1``) is decided by Triton when a kernel is *decorated*, so
it must be set before ``csd_fast.kernels`` is imported; :func:`interpreting` reads the same flag.
"""
from __future__ import annotations

import os

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


def tile_configs(gpu_tiles, interpreter_tile):
    """``triton.Config`` list: ``(BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps)`` tuples on a GPU,
    the single ``interpreter_tile`` under the interpreter (so no autotuning runs there)."""
    tiles = [interpreter_tile] if interpreting() else gpu_tiles
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_stages=s, num_warps=w)
        for m, n, k, s, w in tiles
    ]


def check_tensor(t: torch.Tensor, name: str, dtypes=COMPUTE_DTYPES, dim: int | None = None) -> None:
    """Raise a clear error when ``t`` is not a tensor of one of ``dtypes`` with ``dim`` dimensions."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name}: expected dtype in {[str(d) for d in dtypes]}, got {t.dtype}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{name}: expected a {dim}-D tensor, got shape {tuple(t.shape)}")
