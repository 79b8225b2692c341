"""The native CPU backend of ``FastStudent``: fused NHWC convolutions in C++ (``csrc/cpu_conv*``).

``torch.ops.csd_cpu.conv2d`` computes one 'same' 3x3 or 1x1 convolution of channels-last
activations with its epilogue fused into the store, in the order of the eager backend::

    out = [relu](residual + res_scale * shuffle(conv(x) + bias)) [+ mean]   (pool += out per channel)

fp32 (FMA) or bf16 (AVX512_BF16 dot products of channel pairs, fp32 accumulation, one rounding
at the store); ``out`` (and ``residual``) may be fp32 or bf16 whatever the dtype of ``x``.

bf16 models keep the image in fp32 at both ends: the head (the conv on the 3 image channels) reads
the fp32 ``x - mean`` with fp32 weights and stores bf16, and the tail writes the caller's fp32
output straight from its fp32 accumulators. Rounding the [0, 1] image to bf16 (up to half an 8-bit
grey level) at either end cost up to 0.05 dB PSNR-Y each on the bundled photos, most of the bf16
gap; the bf16 activations and weights in between cost about 0.01 dB at most
(``bench/results/bf16_psnr_cpu.md``). ``torch.ops.csd_cpu.res_block`` runs ``[relu](x + s * conv2(relu(conv1(x))))`` over
row tiles whose intermediate stays in L2; ``torch.ops.csd_cpu.ca_apply`` finishes RCAN's channel
attention from the pooled sums. Weights are packed once by :meth:`NativeBackend.pack` (16 output
channels per block, the pixel shuffle's channel order applied so the shuffle is a store address).
Threads: ``torch.get_num_threads()``, rows shared out by a small work-sharing pool
(``csrc/cpu_pool.h``; robust to a busy machine where OpenMP's barriers stall).

Why hand-written: oneDNN through PyTorch runs each layer as a conv plus separate passes for the
residual adds, ReLUs, pixel shuffles and mean shifts (13% of the time in issue 12's profile), its
RGB tail conv (Cout = 3) runs at a fraction of its speed, and OpenVINO/ONNX Runtime cannot run
inside ``FastStudent``. Per layer the kernels here match oneDNN at 16-128 channels (register
blocking over pixels x 16-channel blocks, two output rows at a time for 16-channel 3x3 convs).

The instruction set is picked at run time (AVX-512, AVX2+FMA, portable scalar; bf16 without
AVX512_BF16 runs the scalar path). Force one with ``CSD_FAST_CPU_ISA=scalar|avx2|avx512`` (read
when a backend is built) or ``NativeBackend(..., isa=...)``; asking for one the CPU lacks is an error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backends import BACKEND_CLASSES, Backend, PackedConv

try:
    from . import _C  # noqa: F401  (registers torch.ops.csd_cpu.*)
except ImportError:  # pragma: no cover - reported by available()
    _C = None

__all__ = ["NativeBackend", "ISAS", "available", "best_isa"]

ISAS = {"auto": 0, "scalar": 1, "avx2": 2, "avx512": 3}
DTYPES = (torch.float32, torch.bfloat16)


def available() -> bool:
    """Whether the ``csd_cpu`` ops are compiled into ``csd_fast._C``."""
    return _C is not None and hasattr(torch.ops.csd_cpu, "conv2d")


def best_isa(dtype: torch.dtype = torch.float32) -> str:
    """The instruction set ``isa="auto"`` runs for ``dtype`` on this CPU."""
    code = torch.ops.csd_cpu.best_isa(dtype == torch.bfloat16)
    return next(name for name, c in ISAS.items() if c == code)


def _isa_code(isa: Optional[str]) -> int:
    name = isa if isa is not None else os.environ.get("CSD_FAST_CPU_ISA", "auto")
    if name not in ISAS:
        where = "isa" if isa is not None else "CSD_FAST_CPU_ISA"
        raise ValueError(f"{where}: expected one of {sorted(ISAS)}, got {name!r}")
    return ISAS[name]


@dataclass
class NativeConv(PackedConv):
    """A packed conv: fp32 ``[CB, k*k, Cin, 16]`` or bf16 ``[CB, k*k, ceil(Cin/2), 16, 2]`` weight,
    fp32 bias ``[CB*16]`` (zero padded), the real output channel count ``cout``."""

    cout: int = 0


def pack_weight(weight: Tensor, dtype: torch.dtype, shuffle: int = 1) -> Tensor:
    """``[Cout, Cin, k, k]`` -> the kernel's blocked layout; output channels reordered from
    PixelShuffle's ``c*r^2 + i*r + j`` to ``(i*r + j)*C + c`` for ``shuffle = r``."""
    cout, cin, k, _ = weight.shape
    w = _shuffle_order(weight.detach().float(), shuffle)
    cb = -(-cout // 16)
    w = F.pad(w, (0, 0, 0, 0, 0, 0, 0, cb * 16 - cout)).view(cb, 16, cin, k, k)
    if dtype == torch.float32:
        return w.permute(0, 3, 4, 2, 1).contiguous()
    pairs = -(-cin // 2)
    w = F.pad(w, (0, 0, 0, 0, 0, 2 * pairs - cin)).view(cb, 16, pairs, 2, k, k)
    return w.permute(0, 4, 5, 2, 1, 3).contiguous().to(dtype)


def pack_bias(bias: Optional[Tensor], shuffle: int = 1) -> Optional[Tensor]:
    if bias is None:
        return None
    b = _shuffle_order(bias.detach().float(), shuffle)
    return F.pad(b, (0, -(-b.numel() // 16) * 16 - b.numel())).contiguous()


def _shuffle_order(t: Tensor, r: int) -> Tensor:
    if r == 1:
        return t
    return t.reshape(t.shape[0] // (r * r), r * r, *t.shape[1:]).transpose(0, 1).reshape(t.shape)


class NativeBackend(Backend):
    """The backend protocol (``csd_fast.backends``) on the ``csd_cpu`` kernels: channels_last
    activations in ``dtype`` (fp32 or bf16), the head's input mean-shifted as in the eager backend."""

    name = "native"

    def __init__(self, dtype: torch.dtype, mean: Tensor, isa: Optional[str] = None):
        if not available():
            raise RuntimeError("backend='native': csd_fast._C was built without the csd_cpu ops; reinstall csd_fast")
        if dtype not in DTYPES:
            raise ValueError(f"dtype: the native CPU backend computes in float32 or bfloat16, got {dtype}")
        super().__init__(dtype, mean)
        self.isa = _isa_code(isa)
        self.mean_in = mean.view(1, 3, 1, 1).float()
        self.mean = mean.reshape(3).float().contiguous()

    def pack(self, conv: nn.Conv2d, shuffle: int = 1) -> NativeConv:
        """Blocked weights, fp32 bias; pixel-shuffle channel order for ``shuffle > 1``. The weights are in
        ``dtype``, except those of a conv on the 3 image channels (the head): fp32, so that it reads the
        image in fp32 (module docstring)."""
        dtype = torch.float32 if conv.in_channels == 3 else self.dtype
        return NativeConv(pack_weight(conv.weight, dtype, shuffle), pack_bias(conv.bias, shuffle),
                          conv.kernel_size[0], conv.out_channels)

    def conv(self, x, layer: NativeConv, *, out=None, residual=None, res_scale=1.0, relu=False, shuffle=1,
             sub_mean=False, add_mean=False, pool=None):
        """``out = [relu](residual + res_scale * shuffle(conv(x [- mean]))) [+ mean]``; ``x`` is read in the
        dtype of the layer's weights, the result written in ``out``'s dtype (fp32 or bf16; fp16 through an
        fp32 buffer), or in ``dtype`` without ``out``."""
        if sub_mean:
            x = (x.float() - self.mean_in).contiguous(memory_format=torch.channels_last)
        x = x.to(layer.weight.dtype)
        n, _, h, w = x.shape
        shape = (n, layer.cout // (shuffle * shuffle), h * shuffle, w * shuffle)
        if out is None:
            dest = self._new(shape, x.device)
        else:
            dest = out if out.dtype in DTYPES else torch.empty_like(out, dtype=torch.float32)
        torch.ops.csd_cpu.conv2d(x, layer.weight, layer.bias, layer.k, layer.cout, dest, residual, float(res_scale),
                                 relu, shuffle, self.mean if add_mean else None, pool, self.isa)
        if out is not None and dest is not out:
            return out.copy_(dest)
        return dest

    def res_block(self, x, conv1, conv2, *, res_scale=1.0, relu_out=False, out=None):
        """``[relu](x + res_scale * conv2(relu(conv1(x))))`` in one op over row tiles (``out`` must not
        alias ``x``); C -> C -> C convs of one kernel size only, else the two-conv default."""
        c = x.shape[1]
        if not (conv1.k == conv2.k and conv1.cout == conv2.cout == c):
            return super().res_block(x, conv1, conv2, res_scale=res_scale, relu_out=relu_out, out=out)
        dest = out if out is not None and out.dtype == self.dtype else self.empty(*x.shape, x.device)
        torch.ops.csd_cpu.res_block(x, conv1.weight, conv1.bias, conv2.weight, conv2.bias, conv1.k, dest, float(res_scale),
                                    relu_out, self.isa, 0)
        if out is not None and dest is not out:
            return out.copy_(dest)
        return dest

    def ca_residual(self, x, t, conv2, att, pool):
        """``x + r * sigmoid(up(relu(down(mean(r)))))``, ``r = conv2(t)`` pooled in its store."""
        r = self.conv(t, conv2, pool=pool)
        out = torch.empty_like(x, memory_format=torch.channels_last)
        torch.ops.csd_cpu.ca_apply(x, r, pool, att.w_down, att.b_down, att.w_up, att.b_up, out)
        return out

    def pools(self, count, n, c, device):
        """Zeroed fp32 per-channel sums, one [N, C] slice per RCAB (one memset per forward)."""
        return list(torch.zeros(count, n, c, device=device, dtype=torch.float32).unbind(0))

    def _new(self, shape, device):
        return self.empty(*shape, device)


BACKEND_CLASSES["native"] = NativeBackend


if available():

    @torch.library.register_fake("csd_cpu::conv2d")
    def _conv2d_fake(x, w, bias, k, cout, out, residual, res_scale, relu, shuffle, mean_out, pool, isa):
        return None

    @torch.library.register_fake("csd_cpu::res_block")
    def _res_block_fake(x, w1, b1, w2, b2, k, out, res_scale, relu_out, isa, tile):
        return None

    @torch.library.register_fake("csd_cpu::ca_apply")
    def _ca_apply_fake(x, r, pool, w_down, b_down, w_up, b_up, out):
        return None
