import csv
import sys

import numpy as np
import pytest
from PIL import Image

from csd_fast.plots import plot_tradeoff, plot_training, read_log, tensorboard_writer


def _write_log(path, with_val=True):
    fields = ["step", "lr", "loss", "l1_student", "l1_teacher", "contrastive", "psnr_teacher", "psnr_student"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for step in range(1, 9):
            row = {"step": step, "lr": 1e-4, "loss": 30 / step, "l1_student": 10 / step, "l1_teacher": 9 / step,
                   "contrastive": 0.05}
            if with_val and step % 4 == 0:
                row.update(psnr_teacher=25 + step / 4, psnr_student=24 + step / 4)
            w.writerow(row)


def _is_png_with_content(path):
    img = np.asarray(Image.open(path).convert("L"))
    return img.shape[0] > 100 and img.std() > 5  # not blank


@pytest.mark.parametrize("with_val", [True, False])
def test_plot_training(tmp_path, with_val):
    _write_log(tmp_path / "log.csv", with_val)
    rows = read_log(tmp_path / "log.csv")
    assert len(rows) == 8 and ("psnr_student" in rows[3]) == with_val and "psnr_student" not in rows[0]
    out = plot_training(tmp_path / "log.csv", tmp_path / "sub" / "curves.png")
    assert out.exists() and _is_png_with_content(out)


def test_read_log_keeps_the_resumed_rows(tmp_path):
    (tmp_path / "log.csv").write_text("step,loss\n1,5\n2,4\n3,3\n2,4.5\n3,3.5\n4,2\n")  # killed after 3, resumed from 1
    assert [(r["step"], r["loss"]) for r in read_log(tmp_path / "log.csv")] == [(1, 5), (2, 4.5), (3, 3.5), (4, 2)]


def test_plot_training_empty_log(tmp_path):
    (tmp_path / "log.csv").write_text("step,loss\n")
    with pytest.raises(ValueError, match="no rows"):
        plot_training(tmp_path / "log.csv", tmp_path / "x.png")


def test_plot_tradeoff(tmp_path):
    rows = [{"dataset": d, "width": w, "params": 1e6 * w * w, "ms": 10 * w, "psnr": 30 + w + (d == "Set5")}
            for d in ("Set5", "Set14") for w in (0.25, 0.5, 1.0)]
    out = plot_tradeoff(rows, tmp_path / "tradeoff.png")
    assert _is_png_with_content(out)
    with pytest.raises(ValueError, match="missing \\['ms'\\]"):
        plot_tradeoff([{"width": 1, "params": 1, "psnr": 1}], tmp_path / "y.png")


def test_tensorboard_skips_gracefully(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.warns(UserWarning, match="tensorboard is not installed"):
        assert tensorboard_writer(tmp_path) is None
