"""The native CPU backend (``csd_fast.native``, ``csrc/cpu_conv*``) against eager PyTorch.

Every instruction set this CPU has is forced in turn (scalar always; AVX2, AVX-512 where present).
Tolerances, relative to max |reference|: fp32 1e-5; bf16 1e-2 for one conv (bf16 inputs and
weights, fp32 accumulation, the output rounded once to bf16: 2^-8 relative, plus accumulation
order); mixed dtypes: 1e-5 for fp32 out of bf16 operands (exact products), 2^-8 + 1e-5 for bf16 out
of fp32 ones; whole bf16 students: at most half the error of PyTorch's own bf16 path (the eager backend)
against the fp32 model (the native path keeps the image in fp32 at the head and the tail).
"""
import pytest
import torch
import torch.nn.functional as F

from csd_fast import native
from csd_fast.fast import accelerate
from csd_fast.models import build_model

pytestmark = pytest.mark.skipif(not native.available(), reason="csd_fast._C built without the csd_cpu ops")

ORDER = ["scalar", "avx2", "avx512"]
ISAS = [isa for isa in ORDER if native.available() and ORDER.index(isa) <= ORDER.index(native.best_isa())]
BF16_TOL = 1e-2


def _rel_err(got, ref):
    return ((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-12)).item()


def _conv_case(n, cin, cout, h, w, k, dtype, isa, shuffle=1, residual=False, relu=False, mean=False, x_slice=False,
               pool=False, res_scale=0.5, out_nchw=False, out_dtype=None):
    """One conv2d call against fp32 F.conv2d of the same (rounded) operands; x and the weights in
    ``dtype``, out and the residual in ``out_dtype`` (default ``dtype``)."""
    out_dtype = out_dtype or dtype
    g = torch.Generator().manual_seed(cin * 1000 + cout * 10 + k)
    conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.2)
        conv.bias.copy_(torch.randn(cout, generator=g))
    wide = cin + 5 if x_slice else cin  # input as a channel slice of a wider buffer (CARN's concatenations)
    x = torch.randn(n, wide, h, w, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)[:, 2:2 + cin] \
        if x_slice else torch.randn(n, cin, h, w, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    # reference: fp32 conv of the (rounded) operands, then the eager epilogue order
    wq, bq = conv.weight.detach().to(dtype).float(), conv.bias.detach().float()
    ref = F.conv2d(x.float(), wq, bq, padding=k // 2)
    if shuffle > 1:
        ref = F.pixel_shuffle(ref, shuffle)
    res = torch.randn(ref.shape, generator=g).to(out_dtype).contiguous(memory_format=torch.channels_last) if residual else None
    if residual:
        ref = res.float() + res_scale * ref
    if relu:
        ref = ref.relu()
    m = torch.randn(ref.shape[1], generator=g) if mean else None
    if mean:
        ref = ref + m.view(1, -1, 1, 1)
    out = torch.empty(ref.shape, dtype=out_dtype)
    if not out_nchw:
        out = out.contiguous(memory_format=torch.channels_last)
    pl = torch.zeros(n, ref.shape[1]) if pool else None
    torch.ops.csd_cpu.conv2d(x, native.pack_weight(conv.weight, dtype, shuffle), native.pack_bias(conv.bias, shuffle), k,
                             cout, out, res, res_scale, relu, shuffle, m, pl, native.ISAS[isa])
    return out, ref, pl


SHAPES = [  # n, cin, cout, h, w, k
    (1, 16, 16, 7, 9, 3), (2, 3, 16, 5, 1, 3), (1, 16, 3, 1, 1, 3), (1, 1, 16, 1, 30, 3), (1, 32, 64, 4, 13, 3),
    (1, 48, 16, 5, 19, 1), (2, 64, 16, 3, 21, 1), (1, 16, 144, 6, 6, 3), (1, 16, 48, 2, 33, 3), (1, 5, 7, 4, 4, 3),
    (1, 64, 64, 3, 26, 3), (2, 32, 3, 5, 13, 3), (1, 40, 3, 4, 10, 3), (1, 16, 1, 3, 9, 1),  # narrow (RGB tail) outputs
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_conv_matches_reference(isa, dtype, shape):
    out, ref, _ = _conv_case(*shape, dtype, isa)
    tol = 1e-5 if dtype == torch.float32 else BF16_TOL
    assert _rel_err(out, ref) <= tol


EPILOGUES = {
    "shuffle2_res_relu": dict(cin=16, cout=64, shuffle=2, residual=True, relu=True),
    "shuffle3": dict(cin=16, cout=144, shuffle=3),
    "shuffle2_c5": dict(cin=8, cout=20, shuffle=2, relu=True),  # 5 channels: lanes straddle shuffle groups
    "res_relu_slice": dict(cin=16, cout=16, residual=True, relu=True, x_slice=True),
    "tail_mean_nchw": dict(cin=16, cout=3, mean=True, out_nchw=True),
    "pool": dict(cin=16, cout=32, pool=True),
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", sorted(EPILOGUES))
def test_conv_epilogues(isa, dtype, case):
    kw = dict(EPILOGUES[case])
    cin, cout = kw.pop("cin"), kw.pop("cout")
    out, ref, pool = _conv_case(2, cin, cout, 5, 11, 3, dtype, isa, **kw)
    tol = 1e-5 if dtype == torch.float32 else BF16_TOL
    assert _rel_err(out, ref) <= tol
    if pool is not None:
        assert _rel_err(pool, ref.float().sum((2, 3))) <= tol


MIXED = {  # x dtype -> the other dtype for out (and residual): a bf16 model's fp32 head and fp32-output tail
    "head": dict(x=torch.float32, cin=3, cout=16),
    "head_c64_relu": dict(x=torch.float32, cin=3, cout=64, relu=True),
    "f32_res_wide": dict(x=torch.float32, cin=32, cout=48, residual=True),
    "f32_pool": dict(x=torch.float32, cin=16, cout=32, pool=True),
    "tail_mean_nchw": dict(x=torch.bfloat16, cin=16, cout=3, mean=True, out_nchw=True),
    "tail_c64_mean_nchw": dict(x=torch.bfloat16, cin=64, cout=3, mean=True, out_nchw=True),
    "bf16_res_relu": dict(x=torch.bfloat16, cin=16, cout=16, residual=True, relu=True),
    "bf16_shuffle2_c5": dict(x=torch.bfloat16, cin=8, cout=20, shuffle=2),
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", sorted(MIXED))
def test_conv_mixed_dtypes(isa, case):
    """fp32 out from bf16 x and weights: the products are exact in fp32, so fp32's tolerance; bf16 out
    from fp32 x: one rounding at the store (half an ulp: at most 2^-8 of the value), plus fp32's."""
    kw = dict(MIXED[case])
    dtype = kw.pop("x")
    out_dtype = torch.bfloat16 if dtype == torch.float32 else torch.float32
    out, ref, pool = _conv_case(2, kw.pop("cin"), kw.pop("cout"), 5, 11, 3, dtype, isa, out_dtype=out_dtype, **kw)
    assert out.dtype == out_dtype
    tol = 1e-5 if out_dtype == torch.float32 else 2 ** -8 + 1e-5
    assert _rel_err(out, ref) <= tol
    if pool is not None:
        assert _rel_err(pool, ref.float().sum((2, 3))) <= tol


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tile", [0, 3, 8, 100])  # 0: auto; 3: below the tiling threshold (two passes)
@pytest.mark.parametrize("n,relu_out", [(1, False), (2, True)])
def test_res_block_matches_two_convs(isa, dtype, tile, n, relu_out):
    """Row tiles with a recomputed halo (37 rows: a partial last tile), input a channel slice."""
    g = torch.Generator().manual_seed(7)
    c, h, w = 16, 37, 11
    wide = torch.randn(n, c + 4, h, w, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    x = wide[:, 4:]
    w1, w2 = (torch.randn(c, c, 3, 3, generator=g) * 0.1 for _ in range(2))
    b1, b2 = (torch.randn(c, generator=g) for _ in range(2))
    t = F.conv2d(x.float(), w1.to(dtype).float(), b1, padding=1).relu()
    if dtype == torch.bfloat16:
        t = t.to(dtype).float()  # the intermediate is stored in the compute dtype
    ref = x.float() + 0.3 * F.conv2d(t, w2.to(dtype).float(), b2, padding=1)
    if relu_out:
        ref = ref.relu()
    out = torch.empty(n, c, h, w, dtype=dtype).contiguous(memory_format=torch.channels_last)
    pk = native.pack_weight
    torch.ops.csd_cpu.res_block(x, pk(w1, dtype), native.pack_bias(b1), pk(w2, dtype), native.pack_bias(b2), 3, out, 0.3,
                                relu_out, native.ISAS[isa], tile)
    assert _rel_err(out, ref) <= (1e-5 if dtype == torch.float32 else BF16_TOL)


STUDENTS = [  # arch, preset, width
    ("edsr", "demo", 0.25), ("rcan", "demo", 0.5), ("carn", "demo", 0.5),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("arch,preset,width", STUDENTS)
def test_student_matches_eager_model(arch, preset, width, scale, isa, monkeypatch):
    monkeypatch.setenv("CSD_FAST_CPU_ISA", isa)
    torch.manual_seed(0)
    student = build_model(arch, scale=scale, preset=preset).export(width).eval()
    x = torch.rand(2, 3, 6, 9)
    with torch.no_grad():
        ref = student(x)
    fast = accelerate(student, backend="native")
    assert fast.backend == "native"
    assert _rel_err(fast(x), ref) <= 1e-5
    eager_bf16 = _rel_err(accelerate(student, dtype=torch.bfloat16, backend="eager")(x), ref)
    y = accelerate(student, dtype=torch.bfloat16, backend="native")(x)
    assert y.dtype == x.dtype and y.shape == ref.shape
    # the image stays fp32 at both ends (head input, tail output), so well below PyTorch's bf16 (which rounds
    # both to bf16: 0.7-0.9x eager when the native path did too; 0.01-0.21x now)
    assert _rel_err(y, ref) <= 0.5 * eager_bf16


def test_isa_choice_is_checked(monkeypatch):
    assert native.best_isa() in native.ISAS
    with pytest.raises(ValueError, match="isa"):
        native.NativeBackend(torch.float32, torch.zeros(3), isa="sse9")
    monkeypatch.setenv("CSD_FAST_CPU_ISA", "avx1024")
    with pytest.raises(ValueError, match="CSD_FAST_CPU_ISA"):
        native.NativeBackend(torch.float32, torch.zeros(3))
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        native.NativeBackend(torch.float16, torch.zeros(3), isa="auto")


def test_conv_rejects_bad_weight():
    x = torch.zeros(1, 16, 4, 4).contiguous(memory_format=torch.channels_last)
    out = torch.empty_like(x)
    with pytest.raises(ValueError, match="w: expected a contiguous packed weight"):
        torch.ops.csd_cpu.conv2d(x, torch.zeros(10), None, 3, 16, out, None, 1.0, False, 1, None, None, 0)
    with pytest.raises(ValueError, match="x: expected channels-contiguous"):
        torch.ops.csd_cpu.conv2d(x.contiguous(), torch.zeros(9 * 16 * 16), None, 3, 16, out, None, 1.0, False, 1, None, None, 0)
