"""Fast inference of exported SR students: ``accelerate(student) -> FastStudent``.

A :class:`FastStudent` runs the same math as the eager model (NCHW [0,1] float in, NCHW out in
the input's dtype) through one of two backends, built once from the model's layers:

- ``"triton"``: the fused kernels of ``csd_fast.kernels`` on channels_last (NHWC) activations,
  weights packed once. The head reads the NCHW input and subtracts the mean on load; the tail
  adds the mean and writes the NCHW output; residuals, ReLUs and pixel shuffles are epilogues;
  CARN's concatenations are slices of preallocated buffers (never copied by ``torch.cat``).
- ``"eager"``: the same layer plan on PyTorch ops (channels_last, contiguous weights in the
  compute dtype, ``inference_mode``): the CPU path.

On CUDA (``cuda_graphs=True``) each input shape and dtype is captured once in a CUDA graph (kept
for the module's life) and replayed; under ``torch.compile`` the plain ops are traced instead.

``backend="auto"`` picks Triton on CUDA and eager elsewhere; ``backend="triton"`` on CPU tensors
needs ``TRITON_INTERPRET=1`` (set before ``csd_fast.kernels`` is first imported).

Dtypes (``SUPPORTED_DTYPES``): fp32, fp16 and bf16 for EDSR, RCAN and CARN. Accumulation is fp32
in every conv; fp32 runs on TF32 tensor cores on a GPU (as cuDNN convs do by default). RCAN's
channel attention (pooling, the two 1x1 convs, the sigmoid) always runs in fp32 on both backends,
so fp16 cannot overflow there; its residual stream is stored in the compute dtype as in the eager
model, which for large trained RCANs can exceed fp16's range (65504): prefer bf16 for those.

Tiling (``tile=T``): the LR image is cut into T x T cores, each run with ``tile_overlap`` LR
pixels of context (windows shifted inside the image, so all have one shape and one CUDA graph),
and the cores are pasted together. Exact (to rounding) when the receptive field fits in the
overlap; RCAN's global channel attention sees only its window, so tiled RCAN is approximate.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models.base import SlimSRModel, check_lr_input
from .models.carn import ResidualUnit
from .models.slim import check_width

__all__ = ["accelerate", "FastStudent", "SUPPORTED_DTYPES", "BACKENDS"]

_ALL = (torch.float32, torch.float16, torch.bfloat16)
SUPPORTED_DTYPES = {"edsr": _ALL, "rcan": _ALL, "carn": _ALL}
BACKENDS = ("auto", "triton", "eager", "native")


@dataclass
class _Conv:
    """One conv of the plan: weight in the backend's layout and dtype, fp32 (triton) or dtype (eager) bias."""

    weight: Tensor
    bias: Optional[Tensor]
    k: int


@dataclass
class _Attention:
    """RCAN channel attention in fp32: ``w_down [C_r, C]``, ``w_up [C, C_r]``."""

    w_down: Tensor
    b_down: Tensor
    w_up: Tensor
    b_up: Tensor


def _attention(ca) -> _Attention:
    f32 = lambda t: t.detach().float().contiguous()
    down, up = ca.down, ca.up
    return _Attention(f32(down.weight.flatten(1)), f32(down.bias), f32(up.weight.flatten(1)), f32(up.bias))


class _EagerOps:
    """The plan's ops on PyTorch: channels_last activations in ``dtype``."""

    name = "eager"

    def __init__(self, dtype: torch.dtype, mean: Tensor):
        self.dtype = dtype
        self.mean = mean.view(1, 3, 1, 1).to(dtype)

    def pack(self, conv: nn.Conv2d, shuffle: int = 1) -> _Conv:
        """Contiguous weights and bias in ``dtype`` (torch's channel order, whatever ``shuffle``)."""
        w = conv.weight.detach().to(self.dtype).contiguous(memory_format=torch.channels_last)
        b = None if conv.bias is None else conv.bias.detach().to(self.dtype)
        return _Conv(w, b, conv.kernel_size[0])

    def conv(self, x, layer, *, out=None, residual=None, res_scale=1.0, relu=False, shuffle=1, sub_mean=False, add_mean=False):
        """``out = [relu](residual + res_scale * shuffle(conv(x [- mean]))) [+ mean]``."""
        if sub_mean:
            x = x.to(self.dtype, memory_format=torch.channels_last) - self.mean
        y = F.conv2d(x, layer.weight, layer.bias, padding=layer.k // 2)
        if shuffle > 1:
            y = F.pixel_shuffle(y, shuffle)
        if residual is not None:
            y = torch.add(residual, y, alpha=res_scale)
        if relu:
            y = y.relu_()
        if add_mean:
            y = y + self.mean
        if out is None:
            return y
        return out.copy_(y)

    def ca_residual(self, x, t, conv2, att: _Attention, pool):
        """``x + r * sigmoid(up(relu(down(mean(r)))))``, ``r = conv2(t)``; the attention in fp32."""
        r = self.conv(t, conv2)
        s = torch.sigmoid(F.linear(F.relu(F.linear(r.float().mean((2, 3)), att.w_down, att.b_down)), att.w_up, att.b_up))
        return torch.addcmul(x, r, s.to(r.dtype)[:, :, None, None])

    def pools(self, count, n, c, device):
        return [None] * count


class _TritonOps:
    """The plan's ops on the fused kernels (``csd_fast.kernels``, imported on first use)."""

    name = "triton"

    def __init__(self, dtype: torch.dtype, mean: Tensor):
        from csd_fast import kernels  # decorating the kernels reads TRITON_INTERPRET

        self.k = kernels
        self.dtype = dtype
        self.mean = mean.reshape(3).float().contiguous()

    def pack(self, conv: nn.Conv2d, shuffle: int = 1) -> _Conv:
        """K-major weights in ``dtype``, fp32 bias; pixel-shuffle column order for ``shuffle > 1``."""
        k = self.k
        return _Conv(k.pack_conv_weight(conv.weight, self.dtype, shuffle), k.pack_conv_bias(conv.bias, shuffle), conv.kernel_size[0])

    def conv(self, x, layer, *, out=None, residual=None, res_scale=1.0, relu=False, shuffle=1, sub_mean=False, add_mean=False, pool=None):
        return self.k.conv2d(
            x, layer.weight, layer.bias, out=out, residual=residual, res_scale=res_scale, relu=relu, shuffle=shuffle,
            mean_in=self.mean if sub_mean else None, mean_out=self.mean if add_mean else None, pool=pool,
        )

    def ca_residual(self, x, t, conv2, att: _Attention, pool):
        r = self.conv(t, conv2, pool=pool)
        return self.k.ca_residual(x, r, pool, att.w_down, att.b_down, att.w_up, att.b_up)

    def pools(self, count, n, c, device):
        """Zeroed fp32 per-channel sums, one [N, C] slice per RCAB (one memset per forward)."""
        return list(torch.zeros(count, n, c, device=device, dtype=torch.float32).unbind(0))


class FastStudent(nn.Module):
    """Inference-only twin of an exported EDSR/RCAN/CARN student; see the module docstring.

    Frozen to the device, dtype and weights it was built with (``accelerate`` again to change them).
    """

    def __init__(self, model: SlimSRModel, dtype: torch.dtype, backend: str, tile: Optional[int], tile_overlap: int, cuda_graphs: bool):
        super().__init__()
        self.arch, self.scale, self.dtype, self.device = model.arch, model.scale, dtype, model._param_device()
        self.tile, self.tile_overlap, self.cuda_graphs = tile, tile_overlap, cuda_graphs
        if backend == "native":
            from .native import NativeOps

            ops_cls = NativeOps
        else:
            ops_cls = _TritonOps if backend == "triton" else _EagerOps
        self.ops = ops_cls(dtype, model.mean_shift.mean)
        self.backend = self.ops.name
        self.channels = model.head.out_channels
        pack = self.ops.pack
        self.head, self.tail = pack(model.head), pack(model.tail)
        self.up = [(pack(conv, f), f) for conv, f in zip(model.upsampler.convs, model.upsampler.factors)]
        self.up_relu = model.upsampler.act
        if self.arch == "edsr":
            self.blocks = [(pack(b.conv1), pack(b.conv2), float(b.res_scale)) for b in model.body]
            self.body_conv = pack(model.body_conv)
        elif self.arch == "rcan":
            self.groups = [([(pack(b.conv1), pack(b.conv2), _attention(b.ca)) for b in g.blocks], pack(g.conv)) for g in model.groups]
            self.body_conv = pack(model.body_conv)
        else:
            self.cascade = self._pack_cascade(model.body)
        self._graphs: dict = {}

    def _pack_cascade(self, node):
        """CARN: ``(units, fuses)``; a unit is ``(conv1, conv2)`` or a nested cascade."""
        pack = self.ops.pack
        units = [(pack(u.conv1), pack(u.conv2)) if isinstance(u, ResidualUnit) else self._pack_cascade(u) for u in node.units]
        return units, [pack(f) for f in node.fuse]

    # ---- the architectures, written once over the backend ops -------------------------------

    def _new(self, n, c, h, w):
        return torch.empty(n, c, h, w, device=self.device, dtype=self.dtype, memory_format=torch.channels_last)

    def _run(self, x: Tensor, out: Tensor) -> Tensor:
        """The network on ``x``, its [B, 3, sH, sW] result written into ``out``."""
        ops = self.ops
        n, _, h, w = x.shape
        if self.arch == "carn":
            c = self.channels
            bufs = [self._new(n, 4 * c, h, w), self._new(n, 4 * c, h, w)]  # outer and inner concatenations
            ops.conv(x, self.head, sub_mean=True, out=bufs[0][:, :c])
            r = self._cascade(self.cascade, bufs, 0)
        else:
            head = ops.conv(x, self.head, sub_mean=True)
            r = self._edsr_body(head) if self.arch == "edsr" else self._rcan_body(head)
            r = ops.conv(r, self.body_conv, residual=head)
        for conv, f in self.up:
            r = ops.conv(r, conv, shuffle=f, relu=self.up_relu)
        return ops.conv(r, self.tail, add_mean=True, out=out)

    def _edsr_body(self, r):
        for conv1, conv2, res_scale in self.blocks:
            r = self.ops.conv(self.ops.conv(r, conv1, relu=True), conv2, residual=r, res_scale=res_scale)
        return r

    def _rcan_body(self, r):
        n, c = r.shape[:2]
        pools = iter(self.ops.pools(sum(len(blocks) for blocks, _ in self.groups), n, c, r.device))
        for blocks, conv in self.groups:
            g = r
            for conv1, conv2, att in blocks:
                g = self.ops.ca_residual(g, self.ops.conv(g, conv1, relu=True), conv2, att, next(pools))
            r = self.ops.conv(g, conv, residual=r)
        return r

    def _cascade(self, node, bufs, depth, dest=None):
        """``o_i = relu(fuse_i(cat(x, b_1..b_i)))``, the input ``x`` in ``bufs[depth][:, :C]`` and each
        ``b_i`` written into the next slot; returns ``o_3`` (into ``dest`` if given)."""
        units, fuses = node
        c, buf, ops = self.channels, bufs[depth], self.ops
        nested = not isinstance(units[0][0], _Conv)
        out = buf[:, :c]
        for i, (unit, fuse) in enumerate(zip(units, fuses)):
            slot = buf[:, (i + 1) * c:(i + 2) * c]
            if nested:  # its input (head output or o_{i-1}) is already in the inner buffer's first slot
                if i == 0:
                    bufs[depth + 1][:, :c].copy_(out)
                self._cascade(unit, bufs, depth + 1, dest=slot)
            else:
                conv1, conv2 = unit
                ops.conv(ops.conv(out, conv1, relu=True), conv2, residual=out, relu=True, out=slot)
            target = dest if i == len(units) - 1 else (bufs[depth + 1][:, :c] if nested else None)
            out = ops.conv(buf[:, :(i + 2) * c], fuse, relu=True, out=target)
        return out

    # ---- calling convention, CUDA graphs, tiling --------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] float in [0, 1] -> [B, 3, sH, sW] in the input's dtype (a normal tensor, not an
        inference tensor: the caller may modify it)."""
        check_lr_input(x, "x")
        if x.device != self.device:
            raise ValueError(f"x: expected a tensor on {self.device} (where the FastStudent was built), got {x.device}")
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

    def _once(self, x: Tensor, out: Tensor) -> Tensor:
        """One pass; on CUDA, a CUDA graph captured per input shape and dtype, then replayed."""
        if not (self.cuda_graphs and x.is_cuda):
            return self._run(x, out)
        key = (tuple(x.shape), x.dtype)
        if key not in self._graphs:
            static_x, static_y = x.clone(), self._output(x)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up: compiles and autotunes outside the capture
                self._run(static_x, static_y)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._run(static_x, static_y)
            self._graphs[key] = (graph, static_x, static_y)
        graph, static_x, static_y = self._graphs[key]
        static_x.copy_(x)
        graph.replay()
        return out.copy_(static_y)

    def _tiled(self, x: Tensor, out: Tensor) -> Tensor:
        h, w = x.shape[2:]
        s, t, o = self.scale, self.tile, self.tile_overlap
        for ys, ye, wy in _windows(h, t, o):
            for xs, xe, wx in _windows(w, t, o):
                window = x[:, :, wy:wy + min(h, t + 2 * o), wx:wx + min(w, t + 2 * o)]
                y = self._once(window, self._output(window))
                out[:, :, ys * s:ye * s, xs * s:xe * s] = y[:, :, (ys - wy) * s:(ye - wy) * s, (xs - wx) * s:(xe - wx) * s]
        return out

    def _apply(self, fn, recurse=True):
        raise RuntimeError(
            f"FastStudent is frozen to {self.device} and {self.dtype}: move or cast the student, then call "
            "accelerate(student, dtype=...) again"
        )

    def extra_repr(self) -> str:
        return f"arch={self.arch}, scale={self.scale}, dtype={self.dtype}, backend={self.backend}, device={self.device}, tile={self.tile}"


def _windows(size: int, tile: int, overlap: int):
    """``(core_start, core_end, window_start)`` along one axis: cores of ``tile`` pixels, windows of
    ``min(size, tile + 2*overlap)`` pixels placed inside the image with >= ``overlap`` context
    around each core wherever the image goes on."""
    win = min(size, tile + 2 * overlap)
    for start in range(0, size, tile):
        yield start, min(start + tile, size), min(max(start - overlap, 0), size - win)


def _pick_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device.type == "cuda" and not _has_triton():
            warnings.warn("accelerate: triton is not installed, so the CUDA model runs the eager backend (cuDNN); "
                          "pip install 'triton>=3.6,<3.10' for the fused kernels", RuntimeWarning, stacklevel=3)
            return "eager"
        return "triton" if device.type == "cuda" else "eager"
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
    tile: Optional[int] = None, tile_overlap: int = 16, cuda_graphs: bool = True,
) -> FastStudent:
    """A :class:`FastStudent` for an exported EDSR/RCAN/CARN student (or a full model and ``width``,
    exported first), on the student's device, computing in ``dtype`` (default: the student's)."""
    if not isinstance(student, SlimSRModel) or student.arch not in SUPPORTED_DTYPES:
        got = getattr(student, "arch", None) or type(student).__name__
        raise TypeError(f"student: expected an EDSR, RCAN or CARN SlimSRModel, got {got!r}")
    if width is not None:
        student = student.export(check_width(width))
    dtype = dtype or student._param_dtype()
    if dtype not in SUPPORTED_DTYPES[student.arch]:
        raise ValueError(f"dtype: expected one of {[str(d) for d in SUPPORTED_DTYPES[student.arch]]} for {student.arch}, got {dtype}")
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise ValueError(f"tile: expected None or a positive int (LR pixels), got {tile!r}")
    if isinstance(tile_overlap, bool) or not isinstance(tile_overlap, int) or tile_overlap < 0:
        raise ValueError(f"tile_overlap: expected an int >= 0 (LR pixels), got {tile_overlap!r}")
    backend = _pick_backend(backend, student._param_device())
    return FastStudent(student.eval(), dtype, backend, tile, tile_overlap, cuda_graphs).eval()
