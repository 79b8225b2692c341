"""FastStudent on the Triton backend under the interpreter (run by tests/test_fast.py with
TRITON_INTERPRET=1), against the exported eager student on the same input.

Tolerances: fp32 (IEEE dot in the interpreter) atol=rtol=1e-4; fp16 vs the fp32 eager student
atol=rtol=3e-2 (fp16 activations through ~10 layers of weights ~N(0, 0.1)).
"""
import pytest
import torch

from csd_fast.fast import accelerate
from csd_fast.kernels import interpreting
from csd_fast.models import build_model
from _interp_utils import assert_close

if not interpreting():
    pytest.skip("run through tests/test_fast.py (sets TRITON_INTERPRET=1)", allow_module_level=True)

TINY = {
    "edsr": dict(n_feats=32, n_resblocks=2, res_scale=0.5),
    "rcan": dict(n_feats=32, n_resgroups=2, n_resblocks=1, reduction=8),
    "carn": dict(n_feats=16),
}
TOL = {torch.float32: (1e-4, 1e-4), torch.float16: (3e-2, 3e-2)}


def _student(arch, scale, width=0.5):
    model = build_model(arch, scale=scale, preset=None, **TINY[arch])
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return model, model.export(width)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("arch,scale,shape", [
    ("edsr", 2, (2, 3, 5, 7)), ("edsr", 3, (1, 3, 1, 1)), ("rcan", 4, (2, 3, 5, 7)),
    ("rcan", 2, (1, 3, 1, 1)), ("carn", 2, (2, 3, 5, 7)), ("carn", 4, (1, 3, 3, 2)),
])
def test_triton_student_matches_eager_export(arch, scale, shape, dtype):
    _, student = _student(arch, scale)
    fast = accelerate(student, dtype=dtype, backend="triton")
    assert fast.backend == "triton"
    x = torch.rand(shape)
    y = fast(x)
    assert y.shape == (shape[0], 3, shape[2] * scale, shape[3] * scale) and y.dtype == x.dtype
    assert_close(y, student(x), *TOL[dtype], what=f"{arch} x{scale} {dtype}")


def test_full_model_with_width_equals_the_sliced_forward():
    model, _ = _student("carn", 2, width=0.5)
    x = torch.rand(1, 3, 4, 5)
    assert_close(accelerate(model, width=0.5, backend="triton")(x), model(x, 0.5), *TOL[torch.float32], what="width")


def test_tiling_matches_one_pass():
    """EDSR x2 without blocks: receptive field radius 1 + 1 + 1 + 1/2 LR pixels <= overlap 4;
    the 12x5 image is cut into 11x5 windows, so overlap 1 must differ."""
    model = build_model("edsr", scale=2, preset=None, n_feats=16, n_resblocks=0)
    x = torch.rand(1, 3, 12, 5)
    one = accelerate(model, backend="triton")(x)
    assert_close(accelerate(model, backend="triton", tile=3, tile_overlap=4)(x), one, 1e-5, 1e-5, what="tiled")
    assert not torch.allclose(accelerate(model, backend="triton", tile=3, tile_overlap=1)(x), one, atol=1e-4)


@pytest.mark.parametrize("arch", ["rcan", "carn"])
def test_composes_with_torch_compile(arch):
    """The custom ops trace (fake tensors; functionalized writes into out, pool views, concat slices)."""
    torch._dynamo.reset()
    _, student = _student(arch, 2)
    fast = accelerate(student, backend="triton", cuda_graphs=False)
    x = torch.rand(1, 3, 4, 5)
    compiled = torch.compile(fast, backend="aot_eager", fullgraph=True)
    assert_close(compiled(x), student(x), *TOL[torch.float32], what=f"compiled {arch}")
