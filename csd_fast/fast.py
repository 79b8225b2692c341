"""Fast inference of exported SR students: ``accelerate(student) -> FastStudent``.

A :class:`FastStudent` runs the same math as the eager model (NCHW [0,1] float in, NCHW out in
the input's dtype): the architecture's plan (``csd_fast/models/<arch>/plan.py``, found through the
registry) packs the model's layers once and runs them over one of the backends of
``csd_fast.backends`` (the protocol is documented there). This module is the generic part: the
backend choice, the calling convention, CUDA graphs and tiling.

- ``"triton"``: the fused kernels of ``csd_fast.kernels`` on channels_last (NHWC) activations,
  weights packed once. The head reads the NCHW input and subtracts the mean on load; the tail
  adds the mean and writes the NCHW output; residuals, ReLUs and pixel shuffles are epilogues;
  CARN's concatenations are slices of preallocated buffers (never copied by ``torch.cat``).
- ``"native"``: the same plan on the C++ CPU kernels of ``csd_fast.native`` (fp32, bf16).
- ``"cpu-auto"``: per layer shape, ``"native"`` or ``"eager"``, whichever this machine runs faster
  (measured once per layer shape, dtype, thread count and input size; ``csd_fast.cpu_dispatch``).
- ``"eager"``: the same plan on PyTorch ops (channels_last, contiguous weights in the
  compute dtype, ``inference_mode``).

On CUDA (``cuda_graphs=True``) the shapes run more than once (and the tile shape at once) are
captured in CUDA graphs and replayed, at most ``graph_cache_size`` of them, least recently used
dropped first (``csd_fast.cuda_graphs``); under ``torch.compile`` the plain ops are traced instead.
A FastStudent is a drop-in ``nn.Module`` (parameters, ``state_dict``, ``.to()``; see the class).

``backend="auto"`` picks Triton on CUDA, native on CPU for fp32 and bf16 (eager for fp16 or,
with a warning, without the compiled ops); ``"cpu-auto"`` is opt-in until its per-layer choices
beat native in the benchmark (``bench/results/speed_cpu_auto.md``: 2 of 12 rows; its first-use
measurements are noisy on a shared machine); ``backend="triton"`` on CPU tensors
needs ``TRITON_INTERPRET=1`` (set before ``csd_fast.kernels`` is first imported).

Dtypes (``SUPPORTED_DTYPES``, from each architecture's registry entry): fp32, fp16 and bf16 for
EDSR, RCAN and CARN. Accumulation is fp32 in every conv; fp32 runs on TF32 tensor cores on a GPU
(as cuDNN convs do by default). RCAN's channel attention (pooling, the two 1x1 convs, the
sigmoid) always runs in fp32 on both backends, so fp16 cannot overflow there; its residual
stream is stored in the compute dtype as in the eager model, which for large trained RCANs can
exceed fp16's range (65504): prefer bf16 for those.

Tiling (``tile=T``): the LR image is cut into T x T cores, each run with ``tile_overlap`` LR
pixels of context (windows shifted inside the image, so all have one shape and one CUDA graph),
and the cores are pasted together. Exact (to rounding) when the receptive field fits in the
overlap; RCAN's global channel attention sees only its window, so tiled RCAN is approximate.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import is_dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from . import cpu_dispatch  # noqa: F401  (adds the "cpu-auto" CPU backend to BACKEND_CLASSES)
from . import native  # noqa: F401  (adds the "native" CPU backend to BACKEND_CLASSES)
from .backends import BACKEND_CLASSES
from .cuda_graphs import GraphCache
from .models.base import SlimSRModel, check_lr_input
from .models.registry import SUPPORTED_DTYPES, get_arch
from .student_io import student_at

__all__ = ["accelerate", "FastStudent", "SUPPORTED_DTYPES", "BACKENDS"]

BACKENDS = ("auto", *BACKEND_CLASSES)


class FastStudent(nn.Module):
    """Inference-only twin of an exported student with a fast path; see the module docstring.

    A drop-in for the student it was built from: its parameters and ``state_dict()`` are the
    student's (a copy: the caller's model is never touched), so ``next(m.parameters())`` finds
    the device and the state dict loads into the student's class; ``load_state_dict`` re-packs.
    The packed weights are non-persistent buffers. ``.to()``/``.cuda()``/``.half()``/``.float()``
    to the same device and dtype do nothing; to another device or compute dtype they move the
    kept student weights (never cast: a round trip through fp16 loses nothing) and re-pack them.
    ``device``, ``dtype`` (the compute dtype), ``scale``, ``arch`` and ``backend`` say what it runs.
    Safe to call from several threads at once.
    """

    def __init__(self, model: SlimSRModel, dtype: torch.dtype, backend: str, tile: Optional[int], tile_overlap: int,
                 cuda_graphs: bool, graph_cache_size: int = 8):
        super().__init__()
        self.arch, self.scale = model.arch, model.scale
        self.tile, self.tile_overlap, self.cuda_graphs = tile, tile_overlap, cuda_graphs
        self._graphs = GraphCache(graph_cache_size)
        self._requested_backend = backend
        self.__dict__["_student"] = model.eval()  # not a submodule: its children are ours, so the state dict is its own
        for name, child in model.named_children():
            self.add_module(name, child)
        self._pack(model._param_device(), dtype)
        self.register_load_state_dict_post_hook(lambda module, keys: module._pack(module.device, module.dtype))

    def _pack(self, device: torch.device, dtype: torch.dtype) -> None:
        """(Re)build the backend and the architecture's plan from the kept student weights."""
        with self._graphs.lock:
            self.device, self.dtype = device, dtype
            self.ops = BACKEND_CLASSES[_pick_backend(self._requested_backend, device, dtype)](dtype, self._student.mean_shift.mean)
            self.backend = self.ops.name
            self.plan = get_arch(self.arch).plan(self._student, self.ops)
            for name in [n for n in self._buffers if n.startswith("packed_")]:
                del self._buffers[name]
            for i, t in enumerate(_tensors(self.plan.__dict__)):
                self.register_buffer(f"packed_{i}", t, persistent=False)
        self._graphs.clear()  # the graphs read the old packed weights

    def _apply(self, fn, recurse=True):
        """``.to()``, ``.cuda()``, ``.half()``, ...: see the class docstring."""
        probe = fn(torch.empty(0, device=self.device, dtype=self.dtype))
        if (probe.device, probe.dtype) == (self.device, self.dtype):
            return self
        _check_dtype(self.arch, probe.dtype)
        self._student.to(probe.device)
        self._pack(probe.device, probe.dtype)
        return self

    def _run(self, x: Tensor, out: Tensor) -> Tensor:
        """The network on ``x``, its [B, 3, sH, sW] result written into ``out``."""
        return self.plan.run(x, out)

    # ---- calling convention, CUDA graphs, tiling --------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] float in [0, 1] -> [B, 3, sH, sW] in the input's dtype (a normal tensor, not an
        inference tensor: the caller may modify it)."""
        check_lr_input(x, "x")
        if x.device != self.device:
            raise ValueError(f"x: expected a tensor on {self.device} (where the FastStudent runs; move it with .to()), got {x.device}")
        out = self._output(x)
        if torch.compiler.is_compiling():
            with torch.no_grad():
                return self._run(x, out)
        # Triton launches and graph capture use the current device: make it the model's
        on_device = torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()
        with torch.inference_mode(), on_device:
            if self.tile is not None and max(x.shape[2:]) > self.tile:
                self._tiled(x, out)
            else:
                self._once(x, out)
        return out

    def _output(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        return torch.empty(n, 3, h * self.scale, w * self.scale, device=x.device, dtype=x.dtype)

    def _graphs_on(self, x: Tensor) -> bool:
        return self.cuda_graphs and x.is_cuda

    def _once(self, x: Tensor, out: Tensor, fixed: bool = False) -> Tensor:
        """One pass; on CUDA through the graph cache (``fixed``: the tile shape, captured at once)."""
        if not self._graphs_on(x):
            return self._run(x, out)
        return self._graphs(self._run, x, out, fixed)

    def _tiled(self, x: Tensor, out: Tensor) -> Tensor:
        h, w = x.shape[2:]
        s, t, o = self.scale, self.tile, self.tile_overlap
        for ys, ye, wy in _windows(h, t, o):
            for xs, xe, wx in _windows(w, t, o):
                window = x[:, :, wy:wy + min(h, t + 2 * o), wx:wx + min(w, t + 2 * o)]
                y = self._once(window, self._output(window), fixed=True)
                out[:, :, ys * s:ye * s, xs * s:xe * s] = y[:, :, (ys - wy) * s:(ye - wy) * s, (xs - wx) * s:(xe - wx) * s]
        return out

    def extra_repr(self) -> str:
        return f"arch={self.arch}, scale={self.scale}, dtype={self.dtype}, backend={self.backend}, device={self.device}, tile={self.tile}"


def _tensors(obj) -> list[Tensor]:
    """Every tensor held by a plan's attributes (lists, tuples, dicts, dataclasses), each once."""
    if isinstance(obj, Tensor):
        return [obj]
    if is_dataclass(obj):
        obj = vars(obj)
    if isinstance(obj, dict):
        obj = list(obj.values())
    if not isinstance(obj, (list, tuple)):
        return []
    found = {}
    for item in obj:
        for t in _tensors(item):
            found.setdefault(id(t), t)
    return list(found.values())


def _windows(size: int, tile: int, overlap: int):
    """``(core_start, core_end, window_start)`` along one axis: cores of ``tile`` pixels, windows of
    ``min(size, tile + 2*overlap)`` pixels placed inside the image with >= ``overlap`` context
    around each core wherever the image goes on."""
    win = min(size, tile + 2 * overlap)
    for start in range(0, size, tile):
        yield start, min(start + tile, size), min(max(start - overlap, 0), size - win)


def _pick_backend(backend: str, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    if backend != "auto" and backend not in BACKEND_CLASSES:  # read live: backends may be added
        raise ValueError(f"backend: expected one of {('auto', *BACKEND_CLASSES)}, got {backend!r}")
    if backend == "auto":
        if device.type == "cuda" and not _has_triton():
            warnings.warn("accelerate: triton is not installed, so the CUDA model runs the eager backend (cuDNN); "
                          "pip install 'triton>=3.6,<3.10' for the fused kernels", RuntimeWarning, stacklevel=3)
            return "eager"
        if device.type == "cuda":
            return "triton"
        if dtype not in native.DTYPES:
            return "eager"
        if not native.available():
            warnings.warn("accelerate: the native CPU kernels are not built into csd_fast._C, so the model runs the "
                          "eager backend; rebuild with pip install --no-build-isolation -e .", RuntimeWarning, stacklevel=3)
            return "eager"
        return "native"
    if backend in ("native", "cpu-auto") and device.type != "cpu":
        raise ValueError(f"backend={backend!r}: expected a CPU model, got device {device}")
    if backend == "triton":
        if not _has_triton():
            raise RuntimeError("backend='triton': triton is not installed (pip install 'triton>=3.6,<3.10'), use backend='eager'")
        from csd_fast.kernels.utils import interpreting

        if device.type != "cuda" and not interpreting():
            raise ValueError(f"backend='triton': expected a CUDA model, or TRITON_INTERPRET=1 for CPU tensors; got device {device}")
    return backend


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def accelerate(
    student: SlimSRModel, dtype: Optional[torch.dtype] = None, width: Optional[float] = None, backend: str = "auto",
    tile: Optional[int] = None, tile_overlap: int = 16, cuda_graphs: bool = True, graph_cache_size: int = 8,
) -> FastStudent:
    """A :class:`FastStudent` for an exported student (or a full model and ``width``, exported first),
    on the student's device, computing in ``dtype`` (default: the student's). The caller's model is
    not modified (the FastStudent keeps its own copy of the weights).

    ``width`` is refused for an exported student (``model.export(w)``, ``load_student``) unless it
    is 1.0: the student has only its own width. ``tile``: run on ``tile x tile`` LR windows with
    ``tile_overlap`` pixels of context (one shape, so one CUDA graph serves every window and image).
    ``graph_cache_size``: at most this many CUDA graphs are kept (``csd_fast.cuda_graphs``).
    """
    if not isinstance(student, SlimSRModel) or student.arch not in SUPPORTED_DTYPES:
        got = getattr(student, "arch", None) or type(student).__name__
        raise TypeError(f"student: expected a SlimSRModel of one of {sorted(SUPPORTED_DTYPES)}, got {got!r}")
    compact = student_at(student, width)
    dtype = dtype or student._param_dtype()
    _check_dtype(student.arch, dtype)
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise ValueError(f"tile: expected None or a positive int (LR pixels), got {tile!r}")
    if isinstance(tile_overlap, bool) or not isinstance(tile_overlap, int) or tile_overlap < 0:
        raise ValueError(f"tile_overlap: expected an int >= 0 (LR pixels), got {tile_overlap!r}")
    own = compact if compact is not student else copy.deepcopy(student)
    return FastStudent(own, dtype, backend, tile, tile_overlap, cuda_graphs, graph_cache_size).eval()


def _check_dtype(arch: str, dtype: torch.dtype) -> None:
    if dtype not in SUPPORTED_DTYPES[arch]:
        raise ValueError(f"dtype: expected one of {[str(d) for d in SUPPORTED_DTYPES[arch]]} for {arch}, got {dtype}")
