"""bench/quality.py and bench/train.py run end to end at tiny sizes and write their reports."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quality_bench_quick(tmp_path):
    quality = load("quality")
    report = quality.main(["--quick", "--steps", "2", "--seeds", "0", "1", "--max-side", "48", "--out", str(tmp_path)])
    assert set(report["results"]) == set(quality.VARIANTS)
    for r in report["results"].values():
        assert len(r["psnr_y"]["values"]) == 2 and r["psnr_y"]["std"] >= 0
        assert 0 < r["ssim_y"]["mean"] <= 1
    saved = json.loads((tmp_path / "quality_quick_cpu.json").read_text())
    assert saved["steps"] == 2 and saved["seeds"] == [0, 1] and saved["torch"] and saved["date"]
    md = (tmp_path / "quality_quick_cpu.md").read_text()
    assert "| CSD others |" in md and "CSD - J-T" in md
    # No VGG19 weights here: both contrastive weights follow the demo's random-VGG rule (10x below
    # the paper's: CSD 200 -> 20, DCKD 0.1 -> 0.01), and the report says this is not the paper setting.
    assert not saved["vgg_pretrained"] and saved["lambda_c"] == 20.0 and saved["lambda_dcl"] == pytest.approx(0.01)
    assert "RANDOM VGG19" in md and "not the paper's setting" in md


@pytest.mark.slow
def test_quality_bench_medium_preset_overrides(tmp_path):
    """--preset medium runs with its own threads, N and DCKD weight; overrides still apply."""
    quality = load("quality")
    report = quality.main(["--preset", "medium", "--steps", "1", "--seeds", "0", "--patch", "16", "--max-side", "48",
                           "--variants", "DCKD dynamic", "--threads", "1", "--out", str(tmp_path)])
    assert report["preset"] == "medium" and report["threads"] == 1 and report["steps"] == 1
    assert report["dynamic_neg_num"] == 2 and report["lambda_dcl"] == pytest.approx(0.001)
    assert (tmp_path / "quality_medium_cpu.md").exists()


@pytest.mark.slow
def test_train_bench_quick(tmp_path):
    train = load("train")
    report = train.main(["--quick", "--steps", "1", "--rounds", "1", "--out", str(tmp_path)])
    c, o = report["results"]["csd_fast"], report["results"]["official"]
    assert c["ms"] > 0 and o["ms"] > 0 and c["peak_mib"] >= 0
    assert c["first_loss"] == pytest.approx(o["first_loss"], rel=1e-4)  # the same objective
    assert report["speedup"] == pytest.approx(o["ms"] / c["ms"])
    assert (tmp_path / "train_cpu.json").exists() and "Speed-up" in (tmp_path / "train_cpu.md").read_text()
