"""`csd-fast` train / eval / upscale / export on tiny folders cut from the bundled photos."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from _sr_folders import make_folder, tiny_train_args
from csd_fast.cli import build_parser, main
from dataclasses import replace

from csd_fast.commands.train import resolve_options
from csd_fast.options import TrainOptions, cli_defaults, cli_fields
from csd_fast.data import load_image
from csd_fast.student_io import load_model, load_student


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return {"hr": make_folder(root / "hr", "train", n=4, size=40), "val": make_folder(root / "val", "test", n=2, size=24),
            "root": root}


@pytest.fixture(scope="module")
def trained(folders):
    out = folders["root"] / "run"
    assert main(tiny_train_args(out, folders["hr"], steps=3, val=folders["val"], checkpoint_every=2)) == 0
    return out


def _parse(argv):
    return build_parser().parse_args(argv)


@pytest.mark.parametrize("command, words", [
    ("train", ["--config", "--train-hr", "--bundled", "--div2k", "--teacher", "--resume", "torchrun"]),
    ("eval", ["--self-ensemble", "--plot", "--data-root", "bundled"]),
    ("upscale", ["--tile", "--tile-overlap", "--fast", "alpha"]),
    ("export", ["--width", "load_student"]),
])
def test_help_explains_each_command(command, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for word in words:
        assert word in text
    assert "example" in text


def test_config_then_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("arch: rcan\nlambda-c: 50\nbundled: true\nmodel_args: {n_feats: 16}\n")
    opts = resolve_options(_parse(["train", "--config", str(cfg), "--lambda-c", "7", "--model-arg", "reduction=4"]))
    assert opts.arch == "rcan" and opts.lambda_c == 7.0 and opts.bundled is True
    assert opts.model_args == {"n_feats": 16, "reduction": 4}
    assert opts.width == TrainOptions().width and opts.out == "runs/train"
    (tmp_path / "c.json").write_text(json.dumps({"div2k": "x", "steps": 5}))
    assert resolve_options(_parse(["train", "--config", str(tmp_path / "c.json")])).steps == 5


def test_config_errors_name_the_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("bundled: true\nlamda_c: 3\n")
    assert main(["train", "--config", str(cfg)]) == 2
    assert "unknown key 'lamda_c'" in capsys.readouterr().err
    assert main(["train", "--bundled", "--train-hr", "x"]) == 2
    assert "exactly one of --train-hr DIR, --div2k ROOT, --bundled" in capsys.readouterr().err
    assert main(["train", "--bundled", "--model-arg", "n_feats"]) == 2
    assert "--model-arg: expected KEY=VALUE, got 'n_feats'" in capsys.readouterr().err


@pytest.mark.parametrize("line, message", [
    ("batch: \"4\"", "batch in {cfg}: expected int >= 1, got '4'"),
    ("batch: 0", "batch in {cfg}: expected int >= 1, got 0"),
    ("width: 1.5", "width in {cfg}: expected float > 0.0 and <= 1.0, got 1.5"),
    ("checkpoint_every: 0", "checkpoint_every in {cfg}: expected int >= 1, got 0"),
    ("patch: 0", "patch in {cfg}: expected int >= 1 or null, got 0"),
    ("bundled: \"false\"", "bundled in {cfg}: expected bool, got 'false'"),
    ("val_every: -2", "val_every in {cfg}: expected int >= 1 or null, got -2"),
    ("max_minutes: -1", "max_minutes in {cfg}: expected float > 0.0 or null, got -1"),
    ("negatives: bogus", "negatives in {cfg}: expected one of ['official', 'others', 'self-blur', 'dynamic'], got 'bogus'"),
    ("lr: fast", "lr in {cfg}: expected float > 0.0, got 'fast'"),
    ("lr: .inf", "lr in {cfg}: expected float > 0.0, got inf"),
    ("vgg_input: bgr", "vgg_input in {cfg}: expected one of ['official', 'imagenet'], got 'bgr'"),
])
def test_config_values_are_checked_before_anything_is_built(tmp_path, capsys, monkeypatch, line, message):
    import csd_fast.commands.train as train_cmd

    monkeypatch.setattr(train_cmd, "_train", lambda *a: pytest.fail("built something from a bad config"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"bundled: true\n{line}\n" if not line.startswith("bundled") else line + "\ntrain_hr: x\n")
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert message.format(cfg=cfg) in err and len(err.strip().splitlines()) == 1


def test_yaml_numbers_as_strings_are_read_as_floats(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("bundled: true\nlr: 1e-4\nwidth: \"0.5\"\nlr_milestones: [0.5, 3000]\n")  # PyYAML: '1e-4' is a str
    opts = resolve_options(_parse(["train", "--config", str(cfg)]))
    assert opts.lr == 1e-4 and opts.width == 0.5 and opts.lr_milestones == [0.5, 3000.0]
    flags = resolve_options(_parse(["train", "--bundled", "--vgg-input", "imagenet", "--lr-gamma", "0.5"]))
    assert flags.vgg_input == "imagenet" and flags.lr_gamma == 0.5


def test_every_train_flag_is_a_config_key():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    dests = {a.dest for a in train._actions} - {"help", "config", "func", "debug"}
    assert dests == {f.name for f in cli_fields()}


def test_train_writes_everything(trained):
    for name in ("checkpoint.pt", "log.csv", "training.png", "student.safetensors", "student.json", "config.json"):
        assert (trained / name).is_file(), name
    rows = list(csv.DictReader(open(trained / "log.csv")))
    assert [r["step"] for r in rows] == ["1", "2", "3"] and rows[-1]["psnr_student"]
    loaded = load_model(trained / "checkpoint.pt")
    assert loaded.kind == "checkpoint" and loaded.width == 0.5 and loaded.info["step"] == 3
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(load_student(trained / "student.safetensors")(x), loaded.model(x, 0.5), atol=1e-6, rtol=1e-5)


def test_train_skips_corrupt_image_unless_strict(folders, tmp_path):
    hr = make_folder(tmp_path / "hr", "train", n=2, size=40)
    (hr / "broken.png").write_bytes((hr / "brick.png").read_bytes()[:100])
    with pytest.warns(UserWarning, match="broken.png"):
        assert main(tiny_train_args(tmp_path / "a", hr, steps=1, lambda_c=0)) == 0
    assert main(tiny_train_args(tmp_path / "b", hr, steps=1, lambda_c=0, strict=True)) == 2
    assert not (tmp_path / "b" / "checkpoint.pt").exists()


def test_export_and_eval(trained, folders, tmp_path, capsys, monkeypatch):
    import csd_fast.data

    held_out = [(p.stem, load_image(p)) for p in sorted(folders["val"].iterdir())]
    monkeypatch.setattr(csd_fast.data, "bundled_images", lambda split, max_side=None: held_out)  # decoding the real ones is slow
    student = tmp_path / "s.safetensors"
    assert main(["export", "--model", str(trained / "checkpoint.pt"), "--width", "0.25", "-o", str(student)]) == 0
    assert "width 0.25" in capsys.readouterr().out
    assert load_student(student).config["n_feats"] == 2
    assert main(["eval", "--model", str(trained / "checkpoint.pt"), "--data", "bundled", "--max-side", "32",
                 "--out", str(tmp_path / "ev"), "--plot"]) == 0
    out = capsys.readouterr().out
    assert "PSNR / SSIM" in out and "teacher" in out and "student x0.5" in out and "bicubic" in out
    rows = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert [r["model"] for r in rows] == ["bicubic", "teacher", "student x0.5"]
    assert all(r["images"] == 2 and 5 < r["psnr"] < 60 and 0 < r["ssim"] <= 1 for r in rows)
    widths = sorted(r["width"] for r in json.loads((tmp_path / "ev" / "tradeoff.json").read_text()))
    assert widths == [0.25, 0.5, 0.75, 1.0] and (tmp_path / "ev" / "tradeoff.png").is_file()
    # an exported student on a folder, with self-ensemble
    assert main(["eval", "--model", str(student), "--data", str(trained.parent / "val"), "--self-ensemble",
                 "--out", str(tmp_path / "ev2")]) == 0
    rows = json.loads((tmp_path / "ev2" / "eval.json").read_text())
    assert [r["model"] for r in rows] == ["bicubic", "student x0.25+"]
    assert main(["eval", "--model", str(student), "--width", "0.5", "--out", str(tmp_path / "ev3")]) == 2
    assert "--width: the model file is an exported student" in capsys.readouterr().err


def _inputs(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb).save(folder / "photo.jpg", quality=95)
    alpha = np.tile(np.linspace(0, 255, 10, dtype=np.uint8), (12, 1))
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb[..., 0], "L").save(folder / "grey.png")
    return folder


def test_upscale_files_and_folders(trained, tmp_path):
    src = _inputs(tmp_path / "in")
    ckpt = str(trained / "checkpoint.pt")
    assert main(["upscale", str(src), "-o", str(tmp_path / "out"), "--model", ckpt, "--quiet"]) == 0
    modes = {p.name: Image.open(p).mode for p in (tmp_path / "out").iterdir()}
    assert modes == {"rgb.png": "RGB", "photo.jpg": "RGB", "rgba.png": "RGBA", "grey.png": "L"}
    for name in modes:
        assert Image.open(tmp_path / "out" / name).size == (20, 24)
    alpha = np.asarray(Image.open(tmp_path / "out" / "rgba.png"))[..., 3].astype(float)
    assert alpha[:, 0].mean() < 30 and alpha[:, -1].mean() > 225  # the gradient survives, resized
    # tiles with overlap give the same picture; a single file can go to a file name
    assert main(["upscale", str(src / "rgb.png"), "-o", str(tmp_path / "t.png"), "--model", ckpt, "--tile", "4",
                 "--tile-overlap", "8", "--quiet"]) == 0
    diff = (load_image(tmp_path / "t.png") - load_image(tmp_path / "out" / "rgb.png")).abs().max()
    assert diff <= 1 / 255 + 1e-6


def test_upscale_errors_name_the_problem(trained, tmp_path, capsys):
    ckpt = str(trained / "checkpoint.pt")
    src = _inputs(tmp_path / "in")
    (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.warns(UserWarning, match="skipping .*bad.png"):
        assert main(["upscale", str(src), "-o", str(tmp_path / "o"), "--model", ckpt, "--quiet"]) == 1
    assert len(list((tmp_path / "o").iterdir())) == 4  # the readable ones
    assert main(["upscale", str(src), "-o", str(tmp_path / "o2"), "--model", ckpt, "--quiet", "--strict"]) == 2
    assert "bad.png" in capsys.readouterr().err
    bad = src / "bad.png"
    assert main(["upscale", str(tmp_path / "nope.png"), "-o", str(tmp_path / "o"), "--model", ckpt]) == 2
    assert "neither an image file nor a folder" in capsys.readouterr().err
    assert main(["upscale", str(bad), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_upscale_fast(trained, tmp_path):
    src = _inputs(tmp_path / "in")
    ckpt = str(trained / "checkpoint.pt")
    try:
        import csd_fast.fast  # noqa: F401
    except ImportError:
        assert main(["upscale", str(src / "rgb.png"), "-o", str(tmp_path / "f.png"), "--model", ckpt, "--fast"]) == 2
        return
    for flag, name in (([], "e.png"), (["--fast"], "f.png")):
        assert main(["upscale", str(src / "rgb.png"), "-o", str(tmp_path / name), "--model", ckpt, "--quiet", *flag]) == 0
    diff = (load_image(tmp_path / "f.png") - load_image(tmp_path / "e.png")).abs().max()
    assert diff <= 1 / 255 + 1e-6


def test_data_sources_resolve(folders, tmp_path, monkeypatch):
    import csd_fast.data
    from csd_fast.commands.common import eval_sets
    from csd_fast.commands.train import _train_set

    div2k = tmp_path / "DIV2K"
    make_folder(div2k / "DIV2K_train_HR", n=2, size=40)
    bench = tmp_path / "benchmark"
    make_folder(bench / "Set5" / "HR", "test", n=2, size=24)
    opts = replace(cli_defaults(), div2k=str(div2k), patch=16, quiet=True)
    ds = _train_set(opts, 2)
    assert len(ds) == 2 and ds[0][1].shape == (3, 16, 16)
    monkeypatch.setattr(csd_fast.data, "bundled_images", lambda split, max_side=None: [("a", torch.rand(3, 20, 20))])
    assert len(_train_set(replace(cli_defaults(), bundled=True, patch=8), 2)) == 1
    sets = eval_sets(["Set5", "bundled", str(folders["val"])], 2, data_root=bench)
    assert [(name, len(d)) for name, d in sets] == [("Set5", 2), ("bundled", 1), ("val", 2)]
    with pytest.raises(ValueError, match="benchmark names need --data-root"):
        eval_sets(["Set14"], 2)


def test_train_from_a_foreign_teacher(folders, tmp_path):
    from test_convert import edsr_pytorch_state

    from csd_fast.models import build_model

    teacher = build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=1, res_scale=1.0)
    torch.save({"state_dict": edsr_pytorch_state(teacher)}, tmp_path / "edsr_x2.pt")
    args = tiny_train_args(tmp_path / "run", folders["hr"], steps=1, lambda_c=0, teacher=tmp_path / "edsr_x2.pt",
                           lr="1e-12")
    i = args.index("--scale")
    assert main(args[:i] + args[i + 2:]) == 0  # the scale comes from the teacher
    got = load_model(tmp_path / "run" / "checkpoint.pt").model.state_dict()
    for key, value in teacher.state_dict().items():  # training started from the converted teacher
        torch.testing.assert_close(got[key], value, atol=1e-5, rtol=1e-4)


def _spy_accelerate(monkeypatch):
    import csd_fast.fast

    calls, real = [], csd_fast.fast.accelerate
    monkeypatch.setattr(csd_fast.fast, "accelerate", lambda net, **kw: calls.append(kw) or real(net, **kw))
    return calls


def test_upscale_fast_options(trained, tmp_path, monkeypatch, capsys):
    """--dtype, --no-cuda-graphs and the tile reach accelerate (issue 10 item 13, issue 11 item 4)."""
    src = _inputs(tmp_path / "in")
    ckpt = str(trained / "checkpoint.pt")
    calls = _spy_accelerate(monkeypatch)
    assert main(["upscale", str(src / "rgb.png"), "-o", str(tmp_path / "e.png"), "--model", ckpt, "--quiet"]) == 0
    assert main(["upscale", str(src / "rgb.png"), "-o", str(tmp_path / "b.png"), "--model", ckpt, "--quiet", "--fast",
                 "--dtype", "bfloat16", "--no-cuda-graphs", "--tile", "4", "--tile-overlap", "8"]) == 0
    assert calls == [dict(dtype=torch.bfloat16, cuda_graphs=False, tile=4, tile_overlap=8)]
    diff = (load_image(tmp_path / "b.png") - load_image(tmp_path / "e.png")).abs()
    assert diff.max() <= 8 / 255 and diff.mean() <= 1 / 255  # bf16 activations
    for flag in (["--dtype", "float16"], ["--no-cuda-graphs"]):
        assert main(["upscale", str(src / "rgb.png"), "-o", str(tmp_path / "x.png"), "--model", ckpt, *flag]) == 2
        assert f"{flag[0]}: only applies with --fast" in capsys.readouterr().err


def test_eval_fast_times_the_fast_path(trained, tmp_path, monkeypatch, capsys):
    calls = _spy_accelerate(monkeypatch)
    out = tmp_path / "ev"
    args = ["eval", "--model", str(trained / "checkpoint.pt"), "--data", str(tmp_path / "val"), "--out", str(out)]
    make_folder(tmp_path / "val", "test", n=1, size=16)
    assert main(args) == 0
    plain = json.loads((out / "eval.json").read_text())
    assert main(args + ["--fast", "--dtype", "float32"]) == 0
    from csd_fast import native

    cpu_backend = "cpu-auto" if native.available() else "eager"  # accelerate's CPU default
    assert f"fast path: {cpu_backend} backend, torch.float32" in capsys.readouterr().out
    fast = json.loads((out / "eval.json").read_text())
    assert len(calls) == 2 and all(c["dtype"] == torch.float32 for c in calls)  # teacher and student
    assert [r["model"] for r in fast] == [r["model"] for r in plain]
    for a, b in zip(fast, plain):
        assert abs(a["psnr"] - b["psnr"]) < 1e-3 and a["ms"] > 0


def test_export_onnx(trained, tmp_path, capsys):
    ckpt = str(trained / "checkpoint.pt")
    assert main(["export", "--model", ckpt, "-o", str(tmp_path / "s.safetensors"), "--opset", "18"]) == 2
    assert "--opset: only applies with --format onnx" in capsys.readouterr().err
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'csd_fast[onnx]')")
    pytest.importorskip("onnxscript", reason="onnxscript not installed (pip install 'csd_fast[onnx]')")
    assert main(["export", "--model", ckpt, "-o", str(tmp_path / "s.safetensors")]) == 0
    assert main(["export", "--model", str(tmp_path / "s.safetensors"), "--format", "onnx", "-o", str(tmp_path / "s.onnx")]) == 0
    assert "dynamic batch, height and width" in capsys.readouterr().out
    student = load_student(tmp_path / "s.safetensors")
    x = torch.rand(1, 3, 7, 9)
    session = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(session.run(None, {"lr": x.numpy()})[0]), student(x), atol=1e-5, rtol=1e-5)
