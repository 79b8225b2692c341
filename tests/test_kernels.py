"""Triton kernels: every kernel and epilogue under the interpreter (a subprocess, see
``_interp_kernels.py``), and on a GPU against cuDNN (``gpu`` mark; skipped without CUDA).

GPU tolerances: fp32 runs TF32 (10-bit mantissa) atol=rtol=2e-2; fp16 atol=rtol=1e-2;
bf16 (8-bit mantissa) atol=rtol=5e-2; inputs ~N(0,1), weights scaled to keep |y| ~ 1.
"""
import os

import pytest
import torch
import torch.nn.functional as F

from _interp_utils import assert_close, run_in_interpreter

GPU_TOL = {torch.float32: (2e-2, 2e-2), torch.float16: (1e-2, 1e-2), torch.bfloat16: (5e-2, 5e-2)}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_kernels_under_the_interpreter():
    run_in_interpreter("_interp_kernels.py")


# Ahead-of-time compilation for an H100 (sm_90) needs no GPU: Triton ships ptxas. It proves the
# kernels lower (every epilogue, each dtype) and that tl.dot becomes warp-group tensor-core MMAs.
_EPILOGUES = {
    "block": dict(HAS_BIAS=True, HAS_RES=True, RELU=True, SHUFFLE=1, HAS_POOL=True, HAS_MEAN_IN=False, HAS_MEAN_OUT=False),
    "head+up": dict(HAS_BIAS=True, HAS_RES=False, RELU=True, SHUFFLE=2, HAS_POOL=False, HAS_MEAN_IN=True, HAS_MEAN_OUT=True),
    "plain x3": dict(HAS_BIAS=False, HAS_RES=False, RELU=False, SHUFFLE=3, HAS_POOL=False, HAS_MEAN_IN=False, HAS_MEAN_OUT=False),
}
_OPTIONAL = {"b_ptr": "HAS_BIAS", "res_ptr": "HAS_RES", "mean_in_ptr": "HAS_MEAN_IN", "mean_out_ptr": "HAS_MEAN_OUT"}
_FP32_PTRS = ("b_ptr", "mean_in_ptr", "mean_out_ptr", "pool_ptr")


def _sm90(fn, types: dict, constexprs: dict, **options):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {name: "constexpr" if name in constexprs else types[name] for name in fn.arg_names}
    return triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 90, 32), options=options)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="kernels are interpreted in this process")
@pytest.mark.parametrize("epilogue,dtype", [("block", "fp16"), ("head+up", "bf16"), ("plain x3", "fp32")])
def test_conv_kernel_compiles_for_sm90_with_tensor_cores(epilogue, dtype):
    from csd_fast.kernels.conv2d import _conv2d_kernel

    fn = _conv2d_kernel.fn
    flags = _EPILOGUES[epilogue]
    s = flags["SHUFFLE"]
    constexprs = dict(flags, C_IN=64, C_OUT=64 * s * s, KSIZE=3, DOT_PRECISION="tf32", BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, TILE_W=64)
    constexprs.update({ptr: None for ptr, flag in _OPTIONAL.items() if not flags[flag]})
    types = {n: ("*fp32" if n in _FP32_PTRS else f"*{dtype}") if n.endswith("_ptr") else "fp32" if n == "res_scale" else "i32"
             for n in fn.arg_names}
    ptx = _sm90(fn, types, constexprs, num_warps=4, num_stages=3).asm["ptx"]
    assert "wgmma" in ptx


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="kernels are interpreted in this process")
def test_channel_attention_kernel_compiles_for_sm90():
    from csd_fast.kernels.channel_attention import _ca_residual_kernel as fn

    types = {n: ("*fp16" if n in ("x_ptr", "r_ptr", "out_ptr") else "*fp32") if n.endswith("_ptr")
             else "fp32" if n == "inv_hw" else "i32" for n in fn.arg_names}
    assert _sm90(fn, types, dict(BLOCK_P=32, BLOCK_C=64, BLOCK_R=4), num_warps=4).asm["cubin"]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("c_in,c_out,k,s", [(3, 64, 3, 1), (64, 64, 3, 1), (64, 256, 3, 2), (64, 3, 3, 1), (256, 64, 1, 1)])
def test_conv_on_gpu(c_in, c_out, k, s, dtype):
    from csd_fast.kernels import conv2d, pack_conv_bias, pack_conv_weight

    x = torch.randn(2, c_in, 37, 53, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(c_out, c_in, k, k, device="cuda") * (c_in * k * k) ** -0.5).to(dtype)
    b = torch.randn(c_out, device="cuda")
    res = torch.randn(2, c_out // s**2, 37 * s, 53 * s, device="cuda").to(dtype) if s == 1 else None
    y = conv2d(x, pack_conv_weight(w, shuffle=s), pack_conv_bias(b, shuffle=s), residual=res, res_scale=0.5, relu=True, shuffle=s)
    ref = F.conv2d(x.float(), w.float(), b, padding=k // 2)
    ref = F.pixel_shuffle(ref, s) if s > 1 else res.float() + 0.5 * ref
    assert_close(y, F.relu(ref), *GPU_TOL[dtype], what=f"conv {dtype}")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("c", [16, 32, 64])
def test_persistent_conv_on_gpu(c, dtype):
    """The weight-stationary persistent kernel: more tiles than SMs x programs, odd sizes, batch 2."""
    from csd_fast.kernels import conv2d, pack_conv_weight

    x = torch.randn(2, c, 181, 323, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(c, c, 3, 3, device="cuda") * (9 * c) ** -0.5).to(dtype)
    b = torch.randn(c, device="cuda")
    res = torch.randn_like(x)
    y = conv2d(x, pack_conv_weight(w), b, residual=res, res_scale=0.5, relu=True, persistent=True)
    ref = F.relu(res.float() + 0.5 * F.conv2d(x.float(), w.float(), b, padding=1))
    assert_close(y, ref, *GPU_TOL[dtype], what=f"persistent conv {dtype}")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pool_and_channel_attention_on_gpu(dtype):
    from csd_fast.kernels import ca_residual, conv2d, pack_conv_weight

    n, c, cr = 2, 64, 4
    cl = torch.channels_last
    x = torch.randn(n, c, 45, 67, device="cuda").to(dtype).contiguous(memory_format=cl)
    t = torch.randn(n, c, 45, 67, device="cuda").to(dtype).contiguous(memory_format=cl)
    w = (torch.randn(c, c, 3, 3, device="cuda") / 24).to(dtype)
    pool = torch.zeros(n, c, device="cuda")
    r = conv2d(t, pack_conv_weight(w), None, pool=pool)
    assert_close(pool / (45 * 67), r.float().mean((2, 3)), 1e-3, 1e-3, what="pool")
    wd, bd, wu, bu = (torch.randn(*s, device="cuda") for s in ((cr, c), (cr,), (c, cr), (c,)))
    s = torch.sigmoid(F.linear(F.relu(F.linear(r.float().mean((2, 3)), wd, bd)), wu, bu))
    assert_close(ca_residual(x, r, pool, wd, bd, wu, bu), x.float() + r.float() * s[:, :, None, None],
                 *GPU_TOL[dtype], what="ca_residual")


# The autotune disk cache, driven directly (pure Python: no kernel runs).
def test_tune_cache_round_trips_merges_and_writes_atomically(tmp_path, monkeypatch):
    import triton
    from csd_fast.kernels.tune_cache import TuneCache, cache_dir, tune_key

    monkeypatch.setenv("CSD_FAST_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    key = tune_key("conv2d", torch.device("cpu"), c_in=64, c_out=64, hw=65536)
    assert key == f"interpreter|triton {triton.__version__}|conv2d|c_in=64,c_out=64,hw=65536"
    path = tmp_path / "autotune.json"
    a, b = TuneCache(path), TuneCache(path)  # two processes sharing one file
    assert a.get(key) is None and b.get("other") is None  # both have read the (missing) file
    a.put(key, triton.Config({"BLOCK_M": 128, "TILE_W": 64}, num_warps=8, num_stages=3))
    b.put("other", triton.Config({"BLOCK_M": 64}, num_warps=4, num_stages=2))  # merges, keeps a's entry
    fresh = TuneCache(path)
    got = fresh.get(key)
    assert (got.kwargs, got.num_warps, got.num_stages) == ({"BLOCK_M": 128, "TILE_W": 64}, 8, 3)
    assert fresh.get("other").kwargs == {"BLOCK_M": 64}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["autotune.json"]  # no temporary file left behind


def test_tune_cache_warns_on_a_corrupt_file_and_rewrites_it(tmp_path):
    import triton
    from csd_fast.kernels.tune_cache import TuneCache

    path = tmp_path / "autotune.json"
    path.write_text("{not json")
    cache = TuneCache(path)
    with pytest.warns(RuntimeWarning, match="autotune.json"):
        assert cache.get("k") is None
    with pytest.warns(RuntimeWarning, match="autotune.json"):
        cache.put("k", triton.Config({"BLOCK_M": 32}, num_warps=4, num_stages=1))
    assert TuneCache(path).get("k").kwargs == {"BLOCK_M": 32}


def test_int32_index_math_refuses_images_past_2_31_elements():
    from csd_fast.kernels.utils import int32_extent

    int32_extent(torch.empty(2, 64, 1024, 1024), "x")  # 2^26 per image: fine
    int32_extent(torch.empty(1, 64, 2048, 16384, device="meta", memory_format=torch.channels_last), "x")  # max offset 2^31 - 1
    huge = torch.empty(1, 64, 2049, 16384, device="meta", memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="x: one image spans"):
        int32_extent(huge, "x")


def test_fp32_weights_pack_k_major_and_16_bit_weights_n_major():
    """TF32 wgmma reads B only K-major: fp32 packs as a transposed view (K contiguous), same values."""
    from csd_fast.kernels import pack_conv_weight

    w = torch.randn(48, 16, 3, 3)
    p32, p16 = pack_conv_weight(w), pack_conv_weight(w, torch.float16)
    assert p32.shape == p16.shape == (144, 48)
    assert p32.stride() == (1, 144) and p16.stride() == (48, 1)
    assert torch.equal(p32, w.permute(2, 3, 1, 0).reshape(144, 48))
