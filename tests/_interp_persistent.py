"""The weight-stationary persistent conv under the interpreter (run by tests/test_conv_persistent.py
with TRITON_INTERPRET=1), against ``F.conv2d`` + the epilogue in fp32 on the same (rounded) inputs.

Tolerances: fp32 (IEEE dot in the interpreter) atol=rtol=1e-4; fp16 atol=rtol=1e-2 (one fp16
rounding of the output, |y| ~ a few; accumulation is fp32). bf16 is not run: the interpreter's
``tl.dot`` has no real bf16.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from csd_fast.backends import TritonBackend
from csd_fast.kernels import conv2d, conv2d_persistent, interpreting, pack_conv_weight
from _interp_utils import assert_close

if not interpreting():
    pytest.skip("run through tests/test_conv_persistent.py (sets TRITON_INTERPRET=1)", allow_module_level=True)

CL = torch.channels_last
TOL = {torch.float32: (1e-4, 1e-4), torch.float16: (1e-2, 1e-2)}


@pytest.fixture
def launches(monkeypatch):
    """The persistent kernel's launches (each records the batch and image size)."""
    calls = []
    real = conv2d_persistent.launch
    monkeypatch.setattr(conv2d_persistent, "launch", lambda x, *a: calls.append(tuple(x.shape)) or real(x, *a))
    return calls


def _reference(x, w, b, residual, res_scale, relu):
    y = F.conv2d(x.float(), w, b, padding=1)
    if residual is not None:
        y = residual.float() + res_scale * y
    return F.relu(y) if relu else y


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(
    "n,c,h,w,bias,res,relu",
    [(2, 16, 13, 17, True, True, True),   # H, W not multiples of any tile; 2 images
     (1, 64, 1, 37, True, False, True),   # 1 x N, the EDSR body width
     (3, 48, 5, 3, False, True, False),   # C not a power of two (BLOCK_C 64), W below TILE_W, batch 3
     (1, 8, 1, 1, True, True, True)],     # one pixel: one tile, one program
)
def test_persistent_conv_matches_f_conv2d(n, c, h, w, bias, res, relu, dtype, launches):
    x = torch.randn(n, c, h, w).to(dtype).contiguous(memory_format=CL)
    wt = (torch.randn(c, c, 3, 3) * (9 * c) ** -0.5).to(dtype).float()
    b = torch.randn(c) if bias else None
    residual = torch.randn(n, c, h, w).to(dtype).contiguous(memory_format=CL) if res else None
    y = conv2d(x, pack_conv_weight(wt, dtype), b, residual=residual, res_scale=0.5, relu=relu, persistent=True)
    assert launches == [(n, c, h, w)] and y.dtype == dtype and y.is_contiguous(memory_format=CL)
    assert_close(y, _reference(x, wt, b, residual, 0.5, relu), *TOL[dtype], what="persistent conv")


def test_more_tiles_than_programs_runs_the_tile_loop_many_times():
    """Every interpreter tile leaves each program several tiles of the first case above (so a wrong
    tile stride skips or repeats tiles), and the one-pixel case a single tile and program."""
    sms = conv2d_persistent._num_sms(torch.device("cpu"))
    for bm, tw, per_sm, _, _ in conv2d_persistent._INTERPRETER_TILES:
        tiles = 2 * math.ceil(13 / (bm // tw)) * math.ceil(17 / tw)
        assert tiles >= 3 * sms * per_sm, (bm, tw, per_sm)


def test_nchw_input_and_output_slice_of_a_wider_buffer(launches):
    """Strides: an NCHW input, the output written into channels 16..31 of a 48-channel NHWC buffer."""
    x = torch.randn(2, 16, 6, 11)
    wt, b = torch.randn(16, 16, 3, 3) * 0.1, torch.randn(16)
    buf = torch.randn(2, 48, 6, 11).contiguous(memory_format=CL)
    before = buf.clone()
    conv2d(x, pack_conv_weight(wt), b, relu=True, out=buf[:, 16:32], persistent=True)
    assert len(launches) == 1
    assert_close(buf[:, 16:32], F.relu(F.conv2d(x, wt, b, padding=1)), *TOL[torch.float32], what="slice")
    assert torch.equal(buf[:, :16], before[:, :16]) and torch.equal(buf[:, 32:], before[:, 32:])


def test_persistent_refuses_layers_it_does_not_run():
    x = torch.randn(1, 16, 4, 4).contiguous(memory_format=CL)
    with pytest.raises(ValueError, match="persistent"):  # C_out != C_in
        conv2d(x, pack_conv_weight(torch.randn(32, 16, 3, 3)), None, persistent=True)
    with pytest.raises(ValueError, match="persistent"):  # a 1x1 conv
        conv2d(x, pack_conv_weight(torch.randn(16, 16, 1, 1)), None, persistent=True)
    with pytest.raises(ValueError, match="persistent"):  # RCAN's pooled conv
        conv2d(x, pack_conv_weight(torch.randn(16, 16, 3, 3)), None, pool=torch.zeros(1, 16), persistent=True)
    x = torch.randn(1, 96, 2, 2).contiguous(memory_format=CL)
    with pytest.raises(ValueError, match="persistent"):  # wider than the weights kept on chip
        conv2d(x, pack_conv_weight(torch.randn(96, 96, 3, 3)), None, persistent=True)


@pytest.mark.parametrize("preferred", [False, True])
def test_triton_backend_runs_the_persistent_kernel_only_where_the_model_prefers_it(preferred, launches, monkeypatch):
    monkeypatch.setattr(conv2d_persistent, "MODEL_FASTER", frozenset({(16, torch.float32)} if preferred else ()))
    ops = TritonBackend(torch.float32, torch.tensor([0.4, 0.4, 0.4]))
    conv = torch.nn.Conv2d(16, 16, 3, padding=1)
    body, widen = ops.pack(conv), ops.pack(torch.nn.Conv2d(16, 32, 3, padding=1))
    x = torch.randn(1, 16, 5, 6).contiguous(memory_format=CL)
    y = ops.conv(x, body, residual=x, res_scale=0.5)
    ops.conv(x, widen, relu=True)
    ops.conv(x, body, pool=torch.zeros(1, 16))  # the pooled conv: never persistent
    assert launches == ([(1, 16, 5, 6)] if preferred else [])
    ref = x + 0.5 * conv(x).detach()
    assert_close(y, ref, *TOL[torch.float32], what="backend body conv")
