"""The demo job end to end on tiny stand-in images: files written, student reloadable, table printed."""
import json
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import csd_fast.demo as demo
from csd_fast import load_student
from csd_fast.student_io import load_model


def smooth_images(n, size):
    g = torch.Generator().manual_seed(3)
    return [(f"img{i}", F.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=size, mode="bilinear")[0]) for i in range(n)]


def test_comparison_png_labels_each_panel(tmp_path):
    panels = {"bicubic": torch.zeros(3, 120, 130), "HR": torch.ones(3, 120, 130)}
    demo.comparison_png(panels, {"bicubic": "bicubic\nPSNR-Y 12.34 dB", "HR": "HR"}, str(tmp_path / "c.png"))
    strip = np.asarray(Image.open(tmp_path / "c.png").convert("L"))[: demo.LABEL_HEIGHT].astype(int)
    ink = (strip < 128).sum(0)
    assert ink[:120].sum() > 3 * ink[124:].sum() > 0  # the longer label, over the first panel, has more ink


def test_demo_writes_student_comparison_and_metrics(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "bundled_images", lambda split: smooth_images(3 if split == "train" else 2, (60, 52)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-VGG warning
        result = demo.run_demo(out_dir=str(tmp_path), steps=2, progress=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 2 and set(metrics["methods"]) == {"bicubic", "student", "teacher"}
    assert metrics["lambda_c"] == demo.LAMBDA_C_RANDOM_VGG and not metrics["vgg_pretrained"]
    assert result["student_gain_over_bicubic_db"] == metrics["methods"]["student"]["psnr_y"] - metrics["methods"]["bicubic"]["psnr_y"]
    student = load_student(tmp_path / "student.safetensors")
    assert student.config["n_feats"] == 16 and metrics["methods"]["student"]["params"] == sum(p.numel() for p in student.parameters())
    png = Image.open(tmp_path / "comparison.png")
    assert png.size == (4 * 52 + 3 * 4, 52 + demo.LABEL_HEIGHT)  # four 52x52 centre crops with 4 px gaps, under labels
    strip = np.asarray(png.convert("L"))[: demo.LABEL_HEIGHT]
    for i in range(4):  # every panel's label strip holds dark text on white
        assert (strip[:, i * 56 : i * 56 + 52] < 100).sum() > 20
    teacher = load_model(tmp_path / "teacher.safetensors")
    assert teacher.kind == "teacher" and teacher.width == demo.WIDTH
    assert teacher.model.export(teacher.width).config == student.config
    out = capsys.readouterr().out
    assert "student - bicubic" in out and "teacher" in out


def test_readme_demo_table_has_the_format_the_demo_prints():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
    start = readme.index("| method | PSNR-Y | SSIM-Y | params | CPU ms/img |")
    table = readme[start:start + 5]
    rows = {name: {"psnr_y": 30.0, "ssim_y": 0.9, "params": 1234, "ms_per_image": 5.0} for name in ("bicubic", "student", "teacher")}
    printed = demo.format_table(rows).splitlines()
    assert table[:2] == printed[:2]
    assert [line.split("|")[1] for line in table[2:]] == [line.split("|")[1] for line in printed[2:]]
    for line in table[2:]:  # numbers as the demo formats them: 2 and 4 decimals, thousands separators
        _, _, psnr, ssim, params, ms, _ = line.split("|")
        assert len(psnr.strip().split(".")[1]) == 2 and len(ssim.strip().split(".")[1]) == 4 and "." not in ms
