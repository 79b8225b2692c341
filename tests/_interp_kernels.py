"""Triton kernels under the interpreter (run by tests/test_kernels.py with TRITON_INTERPRET=1).

References: ``F.conv2d`` / ``F.pixel_shuffle`` in fp32 on the same (rounded) inputs.
Tolerances: fp32 (IEEE dot) atol=rtol=1e-4; fp16 atol=rtol=1e-2 (one fp16 rounding of the
output, |y| ~ a few; accumulation is fp32).
"""
import pytest
import torch
import torch.nn.functional as F

from csd_fast.kernels import ca_residual, conv2d, interpreting, pack_conv_bias, pack_conv_weight
from csd_fast.kernels.conv2d import _GPU_TILES, _prune
from _interp_utils import assert_close

if not interpreting():
    pytest.skip("run through tests/test_kernels.py (sets TRITON_INTERPRET=1)", allow_module_level=True)

CL = torch.channels_last
TOL = {torch.float32: (1e-4, 1e-4), torch.float16: (1e-2, 1e-2)}
MEAN = torch.tensor([0.4488, 0.4371, 0.4040])


def _layer(c_in, c_out, k, dtype, bias=True, scale=None):
    """Weights rounded to ``dtype`` (returned in fp32 for the reference), bias, packed weights."""
    w = (torch.randn(c_out, c_in, k, k) * (scale if scale is not None else (c_in * k * k) ** -0.5)).to(dtype).float()
    b = torch.randn(c_out) if bias else None
    return w, b, pack_conv_weight(w, dtype)


def _act(n, c, h, w, dtype, layout=CL):
    return torch.randn(n, c, h, w).to(dtype).contiguous(memory_format=layout)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(
    "n,c_in,c_out,h,w,k",
    [(1, 3, 16, 5, 7, 3), (2, 16, 48, 5, 7, 3), (1, 64, 16, 1, 1, 3), (2, 48, 3, 4, 6, 3),
     (2, 16, 64, 3, 5, 1), (1, 64, 48, 2, 3, 1)],
)
def test_conv_matches_f_conv2d(n, c_in, c_out, h, w, k, dtype):
    x = _act(n, c_in, h, w, dtype)
    wt, b, packed = _layer(c_in, c_out, k, dtype)
    y = conv2d(x, packed, b)
    assert y.dtype == dtype and y.is_contiguous(memory_format=CL)
    assert_close(y, F.conv2d(x.float(), wt, b, padding=k // 2), *TOL[dtype], what="conv")


def test_conv_reads_nchw_and_writes_nchw_through_strides():
    x = _act(2, 3, 5, 7, torch.float32, layout=torch.contiguous_format)
    wt, b, packed = _layer(3, 16, 3, torch.float32)
    out = torch.empty(2, 16, 5, 7)  # NCHW
    conv2d(x, packed, b, out=out)
    assert_close(out, F.conv2d(x, wt, b, padding=1), *TOL[torch.float32], what="nchw")


def test_conv_without_bias_and_fp32_input_to_fp16_weights():
    x = _act(1, 16, 4, 5, torch.float32)
    wt, _, packed = _layer(16, 16, 3, torch.float16, bias=False)
    y = conv2d(x, packed, None)
    assert_close(y, F.conv2d(x.half().float(), wt, padding=1), *TOL[torch.float16], what="no bias")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_epilogue_residual_and_relu(dtype):
    x, res = _act(2, 16, 5, 7, dtype), _act(2, 16, 5, 7, dtype)
    wt, b, packed = _layer(16, 16, 3, dtype)
    y = conv2d(x, packed, b, residual=res, res_scale=0.1)
    ref = res.float() + 0.1 * F.conv2d(x.float(), wt, b, padding=1)
    assert_close(y, ref, *TOL[dtype], what="residual")
    y = conv2d(x, packed, b, residual=res, relu=True)  # CARN unit: relu(conv + x)
    assert_close(y, F.relu(res.float() + F.conv2d(x.float(), wt, b, padding=1)), *TOL[dtype], what="residual+relu")
    y = conv2d(x, packed, b, relu=True)
    assert (y >= 0).all()
    assert_close(y, F.relu(F.conv2d(x.float(), wt, b, padding=1)), *TOL[dtype], what="relu")


@pytest.mark.parametrize("h,w", [(5, 7), (1, 1)])
def test_epilogue_head_mean_shift_is_exact_at_borders(h, w):
    """Subtracting the mean on load, with padding kept at 0, equals sub-then-conv at the image borders."""
    x = torch.rand(2, 3, h, w)  # NCHW [0,1] input as the model gets it
    wt, b, packed = _layer(3, 16, 3, torch.float32)
    y = conv2d(x, packed, b, mean_in=MEAN)
    assert_close(y, F.conv2d(x - MEAN.view(1, 3, 1, 1), wt, b, padding=1), 1e-5, 1e-5, what="mean_in")
    # folding the mean into the bias (sum_k W*mean) is right only away from the padding
    folded = F.conv2d(x, wt, b - wt.sum((2, 3)) @ MEAN, padding=1)
    assert not torch.allclose(y, folded, atol=1e-3)
    assert_close(y[:, :, 1:-1, 1:-1], folded[:, :, 1:-1, 1:-1], 1e-5, 1e-5, what="interior")


def test_epilogue_tail_mean_add_into_nchw_output():
    x = _act(2, 16, 5, 7, torch.float16)
    wt, b, packed = _layer(16, 3, 3, torch.float16)
    out = torch.empty(2, 3, 5, 7)  # fp32 NCHW, like the eager model's output
    conv2d(x, packed, b, mean_out=MEAN, out=out)
    assert_close(out, F.conv2d(x.float(), wt, b, padding=1) + MEAN.view(1, 3, 1, 1), *TOL[torch.float16], what="mean_out")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("c_in,c_out,h,w,relu", [(64, 3, 11, 37, False), (16, 4, 9, 16, True), (24, 1, 1, 33, False)])
def test_small_out_kernel_strips_and_row_segments(c_in, c_out, h, w, relu, dtype, monkeypatch):
    """The tail kernel (C_out <= 4): several column strips and row segments, image borders on every side,
    NCHW fp32 output with the mean added; it, not the implicit GEMM, runs these convs."""
    from csd_fast.kernels import conv2d_small_out

    calls = []
    real = conv2d_small_out.launch
    monkeypatch.setattr(conv2d_small_out, "launch", lambda *a: calls.append(1) or real(*a))
    x = _act(2, c_in, h, w, dtype)
    wt, b, packed = _layer(c_in, c_out, 3, dtype)
    mean = torch.randn(c_out)
    out = torch.empty(2, c_out, h, w)
    conv2d(x, packed, b, mean_out=mean, relu=relu, out=out)
    ref = F.conv2d(x.float(), wt, b, padding=1)
    ref = (F.relu(ref) if relu else ref) + mean.view(1, c_out, 1, 1)
    assert calls == [1]
    assert_close(out, ref, *TOL[dtype], what="small C_out")
    y = conv2d(x, packed, None)  # no bias, NHWC output in the weight dtype
    assert_close(y, F.conv2d(x.float(), wt, padding=1), *TOL[dtype], what="small C_out, no bias")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("s,relu,n,h,w", [(2, False, 2, 5, 7), (3, False, 1, 3, 4), (2, True, 1, 1, 1)])
def test_epilogue_pixel_shuffle(s, relu, n, h, w, dtype):
    c = 4
    x = _act(n, 16, h, w, dtype)
    wt, b, _ = _layer(16, s * s * c, 3, dtype)
    y = conv2d(x, pack_conv_weight(wt, dtype, shuffle=s), pack_conv_bias(b, shuffle=s), shuffle=s, relu=relu)
    ref = F.pixel_shuffle(F.conv2d(x.float(), wt, b, padding=1), s)
    assert_close(y, F.relu(ref) if relu else ref, *TOL[dtype], what=f"shuffle {s}")


def test_conv_reads_and_writes_channel_slices_of_a_concat_buffer():
    """CARN: the 1x1 fusion reads the leading channels of a preallocated NHWC concat buffer; units write slots."""
    buf = _act(2, 48, 5, 7, torch.float32)
    before = buf.clone()
    wt, b, packed = _layer(32, 16, 1, torch.float32)
    conv2d(buf[:, :32], packed, b, relu=True, out=buf[:, 32:])
    assert_close(buf[:, 32:], F.relu(F.conv2d(before[:, :32], wt, b)), *TOL[torch.float32], what="slice")
    assert torch.equal(buf[:, :32], before[:, :32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_pool_epilogue_and_channel_attention_residual(dtype):
    n, c, cr, h, w = 2, 16, 4, 5, 7
    x, t = _act(n, c, h, w, dtype), _act(n, c, h, w, dtype)
    wt, b, packed = _layer(c, c, 3, dtype)
    pool = torch.zeros(n, c)
    r = conv2d(t, packed, b, pool=pool)
    r_ref = F.conv2d(t.float(), wt, b, padding=1)
    assert_close(pool, r.float().sum((2, 3)), 1e-3, 1e-4, what="pool")
    wd, bd, wu, bu = torch.randn(cr, c), torch.randn(cr), torch.randn(c, cr), torch.randn(c)
    y = ca_residual(x, r, pool, wd, bd, wu, bu)
    s = torch.sigmoid(F.linear(F.relu(F.linear(r_ref.mean((2, 3)), wd, bd)), wu, bu))
    assert_close(y, x.float() + r_ref * s[:, :, None, None], *TOL[dtype], what="ca_residual")


def test_fp16_pooling_and_attention_run_in_fp32():
    """Sums past fp16's range (35 pixels x 3000 > 65504) stay finite: RCAN's fp16 safety."""
    x = _act(1, 16, 5, 7, torch.float16)
    _, _, packed = _layer(16, 16, 3, torch.float16, bias=False, scale=0.0)
    pool = torch.zeros(1, 16)
    r = conv2d(x, packed, torch.full((16,), 3000.0), pool=pool)
    assert torch.equal(pool, torch.full((1, 16), 35 * 3000.0))
    wd, bd, wu, bu = torch.full((2, 16), 1e-3), torch.zeros(2), torch.ones(16, 2), torch.zeros(16)
    y = ca_residual(x, r, pool, wd, bd, wu, bu)  # s = sigmoid(2 * relu(16 * 3000 * 1e-3)) ~ 1
    assert_close(y, x.float() + 3000.0, 1.0, 1e-3, what="fp16 attention")


def test_ca_residual_one_pixel_and_odd_channels():
    n, c, cr = 1, 3, 1
    x, r = _act(n, c, 1, 1, torch.float32), _act(n, c, 1, 1, torch.float32)
    pool = r.sum((2, 3)).contiguous()
    wd, bd, wu, bu = torch.randn(cr, c), torch.randn(cr), torch.randn(c, cr), torch.randn(c)
    s = torch.sigmoid(F.linear(F.relu(F.linear(pool, wd, bd)), wu, bu))
    assert_close(ca_residual(x, r, pool, wd, bd, wu, bu), x + r * s[:, :, None, None], 1e-5, 1e-5, what="ca 1x1")


def test_bad_arguments_are_named():
    x = _act(1, 16, 4, 4, torch.float32)
    _, b, packed = _layer(16, 16, 3, torch.float32)
    with pytest.raises(ValueError, match="weight"):
        conv2d(x, packed[:-1], b)
    with pytest.raises(ValueError, match="residual"):
        out = torch.empty_like(x)
        conv2d(x, packed, b, residual=out, out=out)
    with pytest.raises(ValueError, match="shuffle"):
        conv2d(x, packed, b, shuffle=3)
    with pytest.raises(ValueError, match="shuffle"):
        pack_conv_weight(torch.randn(6, 4, 3, 3), shuffle=2)
    with pytest.raises(TypeError, match="x"):
        conv2d(x.double(), packed, b)
    with pytest.raises(ValueError, match="weight"):
        pack_conv_weight(torch.randn(4, 4, 5, 5))


def test_gpu_tiles_prune_to_the_layer():
    import triton

    configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "TILE_W": tw}) for m, n, k, tw, _, _ in _GPU_TILES]
    tail = _prune(configs, {}, C_OUT=3, C_IN=64, W_BUCKET=1024)  # constexprs arrive as keywords
    assert tail and all(c.kwargs["BLOCK_N"] == 16 for c in tail)
    assert len(_prune(configs, {"C_OUT": 256, "C_IN": 64, "W_BUCKET": 1024})) == len(configs)
    head = _prune(configs, {"C_OUT": 64, "C_IN": 3, "W_BUCKET": 1024})
    assert head and all(c.kwargs["BLOCK_K"] == 16 for c in head)
    narrow = _prune(configs, {"C_OUT": 64, "C_IN": 64, "W_BUCKET": 8})
    assert narrow and all(c.kwargs["TILE_W"] == 16 for c in narrow)


def test_autotuner_runs_two_tiles_resets_the_pool_and_caches_the_winner(monkeypatch, tmp_path):
    """Two interpreter tiles: the autotuner benchmarks both (each adds into ``pool``, so the sums are
    right only if ``reset_to_zero`` cleared it), the winner goes to the disk cache, and a process that
    finds it there launches without tuning. A 3-channel output prunes to one tile: no benchmark."""
    from csd_fast.kernels import tune_cache
    from csd_fast.kernels.conv2d import _conv2d_kernel

    assert len(_conv2d_kernel.configs) == 2
    benched = []
    real_bench = _conv2d_kernel._bench
    monkeypatch.setattr(_conv2d_kernel, "_bench", lambda *a, **k: benched.append(k["config"]) or real_bench(*a, **k))
    monkeypatch.setattr(_conv2d_kernel, "cache", {})
    monkeypatch.setattr(tune_cache, "TUNE_CACHE", tune_cache.TuneCache(tmp_path / "autotune.json"))
    x = _act(2, 16, 5, 7, torch.float32)
    wt, b, packed = _layer(16, 32, 3, torch.float32)  # 32 output channels keep both tiles
    ref = F.conv2d(x, wt, b, padding=1)
    for tuned_runs in (2, 0):  # first process tunes; the second reads the winner from disk
        pool = torch.zeros(2, 32)
        y = conv2d(x, packed, b, pool=pool)
        assert len(benched) == tuned_runs
        assert_close(y, ref, *TOL[torch.float32], what="tuned conv")
        assert_close(pool, y.sum((2, 3)), 1e-3, 1e-4, what="pool after tuning")
        benched.clear()
        monkeypatch.setattr(tune_cache, "TUNE_CACHE", tune_cache.TuneCache(tmp_path / "autotune.json"))
    conv2d(x, _layer(16, 3, 3, torch.float32)[2], None)
    assert benched == []


def test_custom_ops_pass_opcheck():
    x = _act(1, 16, 3, 4, torch.float32)
    _, b, packed = _layer(16, 16, 3, torch.float32)
    out, pool, res = torch.empty_like(x), torch.zeros(1, 16), _act(1, 16, 3, 4, torch.float32)
    torch.library.opcheck(torch.ops.csd_fast.conv2d_nhwc.default, (x, packed, b, out, res, None, None, pool, 0.5, True, 1),
                          test_utils=("test_schema", "test_faketensor"))
