"""The demo job end to end on tiny stand-in images: files written, student reloadable, table printed."""
import json
import warnings

import torch
import torch.nn.functional as F
from PIL import Image

import csd_fast.demo as demo
from csd_fast import load_student


def smooth_images(n, size):
    g = torch.Generator().manual_seed(3)
    return [(f"img{i}", F.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=size, mode="bilinear")[0]) for i in range(n)]


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
    assert png.size == (4 * 52 + 3 * 4, 52)  # four 52x52 centre crops with 4 px gaps
    out = capsys.readouterr().out
    assert "student - bicubic" in out and "teacher" in out
