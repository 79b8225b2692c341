"""ONNX export (csd_fast.onnx_export) checked against ONNX Runtime (optional: skipped without it).

Tolerance fp32 atol=rtol=1e-5 against the eager student (same convs, ONNX Runtime's kernels).
"""
import pytest
import torch
from torch import nn

from csd_fast.models import build_model
from csd_fast.onnx_export import export_onnx
from _interp_utils import assert_close

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'csd_fast[onnx]')")
pytest.importorskip("onnxscript", reason="onnxscript not installed (pip install 'csd_fast[onnx]')")


def _model(arch, **over):
    model = build_model(arch, 2, preset=None, **over)
    for p in model.parameters():
        nn.init.normal_(p, std=0.1)
    return model.eval()


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["lr"] and [o.name for o in session.get_outputs()] == ["sr"]
    return torch.from_numpy(session.run(None, {"lr": x.numpy()})[0])


@pytest.mark.parametrize("arch, over", [("rcan", dict(n_feats=16, n_resgroups=1, n_resblocks=1, reduction=4)),
                                        ("carn", dict(n_feats=8))])
def test_dynamic_height_and_width_match_the_student(tmp_path, arch, over):
    model = _model(arch, **over)
    student = model.export(0.5)
    path = export_onnx(student, tmp_path / "s.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.onnx"]  # one file, weights inside
    for shape in [(1, 3, 9, 13), (2, 3, 5, 4), (1, 3, 1, 1)]:
        x = torch.rand(shape)
        with torch.no_grad():
            assert_close(_run(path, x), student(x), 1e-5, 1e-5, what=f"{arch} {shape}")


def test_full_model_at_a_width_and_refusals(tmp_path):
    model = _model("edsr", n_feats=8, n_resblocks=1, res_scale=0.5)
    path = export_onnx(model, tmp_path / "w.onnx", width=0.5, dynamic=False, example_size=6)
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        assert_close(_run(path, x), model(x, 0.5), 1e-5, 1e-5, what="edsr width 0.5")
    with pytest.raises(ValueError, match="width: the model is an exported student"):
        export_onnx(model.export(0.5), tmp_path / "x.onnx", width=0.5)
    with pytest.raises(ValueError, match="path"):
        export_onnx(model, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "x.onnx", opset=11)
