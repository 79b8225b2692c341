"""Packaging: build requirements, licence, ignored paths, an inference install without the training
extras (matplotlib, pyyaml, scikit-image are imported lazily, with a clear message), and
`train --bundled` defaulting to the small demo size."""
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from csd_fast.cli import build_parser
from csd_fast.commands.train import resolve_options
from csd_fast.models import build_model

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("matplotlib", "yaml", "skimage")


def test_pyproject_build_requirements_and_licence():
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    names = {r.split(">")[0].split("=")[0].split("<")[0] for r in build["requires"]}
    assert {"setuptools", "wheel", "torch"} <= names and build["build-backend"] == "setuptools.build_meta"
    assert "--no-build-isolation" in (ROOT / "pyproject.toml").read_text()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    ignored = (ROOT / ".gitignore").read_text().split()
    for path in (".venv/", "build/", "*.egg-info/", "runs/", "*.so", "__pycache__/"):
        assert path in ignored


def test_setup_keeps_training_packages_in_an_extra():
    text = (ROOT / "setup.py").read_text()
    install = text[text.index("install_requires=["):text.index("]", text.index("install_requires=["))]
    for package in ("matplotlib", "pyyaml", "scikit-image"):
        assert package not in install
        assert package in text[text.index("TRAIN_EXTRAS = "):]


def _without_extras(code):
    """Run ``code`` in a fresh interpreter where matplotlib, yaml and skimage cannot be imported."""
    block = "import sys\nfor m in %r: sys.modules[m] = None\n" % (EXTRAS,)
    return subprocess.run([sys.executable, "-c", block + textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_inference_works_without_the_training_extras(tmp_path):
    from PIL import Image

    from csd_fast.student_io import save_student

    student = save_student(build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=1).export(0.5), tmp_path / "s.safetensors")
    Image.new("RGB", (8, 8), (10, 200, 30)).save(tmp_path / "in.png")
    result = _without_extras(f"""
        import torch
        from csd_fast import accelerate, load_student
        from csd_fast.cli import main
        assert "matplotlib" not in [m for m in sys.modules if sys.modules[m] is not None]
        s = load_student({str(student)!r})
        accelerate(s)(torch.rand(1, 3, 8, 8))
        code = main(["upscale", {str(tmp_path / "in.png")!r}, "-o", {str(tmp_path / "out.png")!r},
                     "--model", {str(student)!r}, "--quiet"])
        sys.exit(code)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out.png").is_file()


@pytest.mark.parametrize("argv, needs", [
    (["train", "--config", "c.yaml"], "pyyaml"),
    (["train", "--bundled", "--model-arg", "n_feats=8"], "pyyaml"),
    (["train", "--bundled", "--steps", "1"], "matplotlib"),
    (["eval", "--model", "MODEL", "--plot"], "matplotlib"),
])
def test_missing_training_extras_are_named_in_one_line(argv, needs, tmp_path):
    from csd_fast.student_io import save_student

    (tmp_path / "c.yaml").write_text("bundled: true\n")
    model = save_student(build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=1), tmp_path / "t.safetensors",
                         kind="teacher")
    argv = [str(tmp_path / a) if a == "c.yaml" else str(model) if a == "MODEL" else a for a in argv]
    result = _without_extras(f"""
        from csd_fast.cli import main
        sys.exit(main({argv + ["--out", str(tmp_path / "out"), "--device", "cpu"]!r}))
    """)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert f"needs {needs}, which is not installed" in lines[0] and "csd_fast[train]" in lines[0]


def test_bundled_training_defaults_to_the_demo_size():
    opts = resolve_options(build_parser().parse_args(["train", "--bundled"]))
    assert opts.preset == "demo" and opts.steps == 2000
    assert build_model(opts.arch, scale=4, preset=opts.preset).num_params(1.0) < 2_000_000  # not the 43M paper EDSR
    opts = resolve_options(build_parser().parse_args(["train", "--bundled", "--preset", "paper", "--steps", "7"]))
    assert opts.preset == "paper" and opts.steps == 7  # given values win
    opts = resolve_options(build_parser().parse_args(["train", "--train-hr", "x"]))
    assert opts.preset == "paper" and opts.steps == 300_000
