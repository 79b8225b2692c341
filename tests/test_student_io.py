import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from csd_fast.models import build_model
from csd_fast.student_io import load_model, load_student, read_student_info, save_student


@pytest.mark.parametrize("arch", ["edsr", "rcan", "carn"])
@torch.no_grad()
def test_student_round_trip(arch, tmp_path):
    teacher = build_model(arch, scale=2, preset="demo").eval()
    student = teacher.export(0.25)
    path = save_student(student, tmp_path / "s.safetensors", width=0.25, source="ckpt.pt")
    loaded = load_student(path)
    assert type(loaded) is type(student) and loaded.config == student.config and not loaded.training
    x = torch.rand(1, 3, 10, 12)
    torch.testing.assert_close(loaded(x), teacher(x, 0.25), atol=1e-5, rtol=1e-5)
    # one file suffices: the architecture is in the safetensors metadata; the JSON sidecar says the same
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["csd_fast"])
    assert meta["arch"] == arch and meta["width"] == 0.25 and meta["source"] == "ckpt.pt"
    assert json.loads((tmp_path / "s.json").read_text()) == meta
    assert sum(p.numel() for p in loaded.parameters()) == teacher.num_params(0.25)


def test_save_student_refuses_bad_input(tmp_path):
    model = build_model("edsr", 2, preset="demo").export(0.5)
    with pytest.raises(ValueError, match="path: expected a file name ending in .safetensors"):
        save_student(model, tmp_path / "s.pt")
    with pytest.raises(TypeError, match="model: expected a csd_fast slim model"):
        save_student(torch.nn.Conv2d(3, 3, 3), tmp_path / "s.safetensors")


def test_load_student_refuses_foreign_file(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    assert read_student_info(path) is None
    with pytest.raises(ValueError, match="no 'csd_fast' metadata"):
        load_student(path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors: not a readable safetensors file"):
        load_student(bad)


@torch.no_grad()
def test_load_model_accepts_checkpoint_and_student(tmp_path):
    teacher = build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=1).eval()
    ckpt = {"format_version": 2, "step": 3, "arch": "edsr", "model_config": teacher.config, "width": 0.5,
            "model": teacher.state_dict(), "history": []}
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    got = load_model(tmp_path / "checkpoint.pt")
    assert got.kind == "checkpoint" and got.width == 0.5 and got.info["step"] == 3
    x = torch.rand(1, 3, 6, 6)
    torch.testing.assert_close(got.model(x, 0.5), teacher(x, 0.5))
    save_student(teacher.export(0.5), tmp_path / "s.safetensors", width=0.5)
    got = load_model(tmp_path / "s.safetensors")
    assert got.kind == "student" and got.width == 0.5
    torch.testing.assert_close(got.model(x), teacher(x, 0.5), atol=1e-6, rtol=1e-5)
    with pytest.raises(FileNotFoundError, match="model: .*missing.pt"):
        load_model(tmp_path / "missing.pt")


@pytest.mark.parametrize("arch", ["edsr", "rcan", "carn"])
@torch.no_grad()
def test_old_format_files_load_to_the_same_outputs(arch, tmp_path):
    """Files of csd_fast before format_version 2 hold parameters of a network run on [0, 1] (the same
    frame without the x255 / /255, i.e. img_range = 1). Loading them converts to today's 8-bit units
    and must give the outputs the old version gave."""
    old = build_model(arch, scale=2, preset="demo")
    old.img_range = 1.0  # the old forward
    for p in old.parameters():
        p.add_(torch.randn_like(p) * 0.05)  # biases and attention weights far from zero
    x = torch.rand(1, 3, 9, 10)
    expected = old.eval()(x)
    state = {k: v.clone() for k, v in old.state_dict().items()}
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"step": 3, "arch": arch, "model_config": old.config, "width": 0.5, "model": state}, ckpt)
    loaded = load_model(ckpt)
    assert loaded.model.img_range == 255.0
    torch.testing.assert_close(loaded.model(x), expected, atol=1e-5, rtol=1e-4)
    student = tmp_path / "old.safetensors"
    info = {"format": 1, "arch": arch, "config": {k: list(v) if isinstance(v, tuple) else v for k, v in old.config.items()},
            "width": None, "source": None}
    save_file(state, str(student), metadata={"csd_fast": json.dumps(info)})
    torch.testing.assert_close(load_student(student)(x), expected, atol=1e-5, rtol=1e-4)
    new = tmp_path / "new.safetensors"
    save_student(load_student(student), new)  # written again: today's version, no conversion on load
    assert read_student_info(new)["format_version"] == 2
    torch.testing.assert_close(load_student(new)(x), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch, over, tiling, radius", [
    ("edsr", dict(n_feats=16, n_resblocks=1), "exact", 6),  # head 1 + block 2 + body 1 + up 1 + 1/2 + tail 1/4
    ("carn", dict(n_feats=8), "exact", 21),  # head 1 + 9 units x 2 + up 1 + 1/2 + tail 1/4 (fusions are 1x1)
    ("rcan", dict(n_feats=16, n_resgroups=1, n_resblocks=1, reduction=4), "approximate", 7),  # 1 + 2 + 1 + 1 + 1.75
])
def test_describe_student(arch, over, tiling, radius, tmp_path):
    """The descriptor (issue 10 item 11), read from the file's metadata alone, and its tiling hint:
    tiles with ``tile_overlap`` pixels of context give the one-pass result (EDSR: one pixel less
    does not; CARN's far context is too faint through 20 layers of random weights to show)."""
    from csd_fast import accelerate, describe_student

    teacher = build_model(arch, scale=4, preset=None, **over)
    for p in teacher.parameters():
        torch.nn.init.normal_(p, std=0.1)
    student = teacher.export(0.5)
    path = save_student(student, tmp_path / "s.safetensors", width=0.5)
    d = describe_student(path)
    assert d == describe_student(load_student(path)) == describe_student(student)
    assert (d.arch, d.scale, d.width, d.channels, d.tiling, d.tile_overlap) == (arch, 4, 0.5, over["n_feats"] // 2, tiling, radius)
    assert d.params == teacher.num_params(0.5) and torch.bfloat16 in d.dtypes
    if tiling == "exact":
        x = torch.rand(1, 3, 2 * d.tile_overlap + 11, 2 * d.tile_overlap + 7)  # windows smaller than the image
        one = accelerate(student)(x)
        torch.testing.assert_close(accelerate(student, tile=4, tile_overlap=d.tile_overlap)(x), one, atol=1e-5, rtol=1e-5)
        if arch == "edsr":
            assert not torch.allclose(accelerate(student, tile=4, tile_overlap=d.tile_overlap - 1)(x), one, atol=1e-5)
    with pytest.raises(ValueError, match="width: the model is an exported student"):
        accelerate(load_student(path), width=0.5)
    with pytest.raises(ValueError, match="no 'csd_fast' metadata"):
        save_file({"w": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
        describe_student(tmp_path / "foreign.safetensors")
