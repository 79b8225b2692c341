"""Outputs that never lose work (csd_fast.fileio and the CLI around it): atomic writes under a full
disk, SIGKILL and concurrent writers; the run-folder lock; a non-empty --out; OS and device errors
in one line (exit 2) before any work is done; --debug."""
import contextlib
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _sr_folders import make_folder, tiny_train_args
from csd_fast.cli import main
from csd_fast.fileio import (
    LOCK_NAME, TEMP_PREFIX, RunDirLockedError, atomic_write, atomic_write_bytes, lock_run_dir, unlock_run_dir,
)
from csd_fast.models import build_model
from csd_fast.student_io import save_student

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "csd_fast", *map(str, args)], env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def _python(code, **kw):
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@contextlib.contextmanager
def _holding(folder):
    """Another live process holding the run lock of ``folder``."""
    holder = _python(f"""
        import time
        from csd_fast.fileio import lock_run_dir
        lock_run_dir({str(folder)!r})
        print("locked", flush=True)
        time.sleep(60)
    """)
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        yield holder
    finally:
        holder.kill()
        holder.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "student.safetensors"
    return save_student(build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=1).export(0.5), path, width=0.5)


def _images(folder, n=3, size=12):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


# ----------------------------------------------------------------- atomic writes

def test_atomic_write_full_disk_keeps_the_previous_file(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write_bytes(path, b"previous")
    with pytest.raises(OSError) as err:
        with atomic_write(path) as f:
            f.write(b"half of the new")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)  # names the file it could not write
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["out.bin"]  # no temp file left behind


def test_atomic_write_gives_the_usual_mode(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o640  # 0o666 & ~umask, not mkstemp's 0600


def test_sigkill_while_writing_leaves_no_truncated_file_and_the_orphan_is_cleaned(tmp_path):
    path = tmp_path / "big.bin"
    atomic_write_bytes(path, b"old")
    writer = _python(f"""
        import time
        from csd_fast.fileio import atomic_write
        with atomic_write({str(path)!r}) as f:
            f.write(b"x" * 1000)
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
            f.write(b"y" * 1000)
    """)
    try:
        assert writer.stdout.readline().strip() == "writing", writer.stderr.read()
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait()
    assert path.read_bytes() == b"old"
    orphans = [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert len(orphans) == 1 and orphans[0].stat().st_size == 1000
    rewrite = _python(f"from csd_fast.fileio import atomic_write_bytes; atomic_write_bytes({str(path)!r}, b'new')")
    assert rewrite.wait() == 0, rewrite.stderr.read()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin"] and path.read_bytes() == b"new"


def test_upscale_on_a_full_disk_keeps_the_previous_output(student, tmp_path):
    src = _images(tmp_path / "in", n=1)
    out = tmp_path / "out"
    assert _cli("upscale", src, "-o", out, "--model", student, "--quiet").returncode == 0
    before = (out / "im0.png").read_bytes()
    full_disk = _python(f"""
        import errno, sys
        import PIL.Image
        def save(self, fp, *a, **k):
            fp.write(b"\\x89PNG truncated")
            raise OSError(errno.ENOSPC, "No space left on device")
        PIL.Image.Image.save = save
        from csd_fast.cli import main
        sys.exit(main(["upscale", {str(src)!r}, "-o", {str(out)!r}, "--model", {str(student)!r}, "--quiet"]))
    """)
    _, err = full_disk.communicate(timeout=120)
    assert full_disk.returncode == 2
    assert err.strip().splitlines() == [f"csd-fast upscale: error: No space left on device: {out / 'im0.png'}"]
    assert (out / "im0.png").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["im0.png"]


def test_two_concurrent_upscales_into_one_folder_write_valid_pngs(student, tmp_path):
    src = _images(tmp_path / "in", n=24, size=24)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "csd_fast", "upscale", str(src), "-o", str(out), "--model", str(student), "--quiet"]
    runs = [subprocess.Popen(cmd, env=ENV, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"im{i}.png" for i in range(24))
    for name in names:
        with Image.open(out / name) as im:
            im.load()
            assert im.size == (48, 48)


# ----------------------------------------------------------------- the run lock

def test_run_lock_is_exclusive_and_a_dead_holders_lock_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    with _holding(run_dir) as holder:
        with pytest.raises(RunDirLockedError, match=f"{run_dir}.*PID {holder.pid}"):
            lock_run_dir(run_dir)
    lock_run_dir(run_dir)  # the holder died: its lock is free again
    unlock_run_dir(run_dir)
    (run_dir / LOCK_NAME).write_text(f"{_dead_pid()}\n")  # a lock file left by a dead run
    lock_run_dir(run_dir)
    assert (run_dir / LOCK_NAME).read_text().strip() == str(os.getpid())
    unlock_run_dir(run_dir)


@pytest.fixture(scope="module")
def hr(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("hr"), n=2, size=32)


def test_train_refuses_a_folder_another_run_holds(hr, tmp_path):
    out = tmp_path / "run"
    with _holding(out) as holder:
        start = time.monotonic()
        result = _cli(*tiny_train_args(out, hr, steps=1, resume=True))
        took = time.monotonic() - start
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and f"PID {holder.pid}" in lines[0], result.stderr
    assert took < 60 and not (out / "checkpoint.pt").exists()


def test_train_refuses_a_non_empty_folder_unless_resume_or_overwrite(hr, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.csv").write_text("an earlier run\n")
    result = _cli(*tiny_train_args(out, hr, steps=1))
    assert result.returncode == 2
    assert "not empty" in result.stderr and "--resume" in result.stderr and "--overwrite" in result.stderr
    assert (out / "log.csv").read_text() == "an earlier run\n"
    assert main(tiny_train_args(out, hr, steps=1, resume=True, overwrite=True)) == 2
    assert main(tiny_train_args(out, hr, steps=1, overwrite=True)) == 0
    assert "an earlier run" not in (out / "log.csv").read_text() and (out / "checkpoint.pt").is_file()


# ----------------------------------------------------------------- one line, exit 2, before the work

def _one_error_line(result, command, *words):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"csd-fast {command}: error: "), result.stderr
    for word in words:
        assert word in lines[0]


def _main(capsys, *argv):
    """``main`` in this process (cheaper than a subprocess), as a CompletedProcess-like result."""
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


def test_cuda_on_a_cpu_build_is_one_line(student, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    src = _images(tmp_path / "in", n=1)
    _one_error_line(_cli("upscale", src, "-o", tmp_path / "o", "--model", student, "--device", "cuda"), "upscale", "--device", "cuda")
    _one_error_line(_main(capsys, "eval", "--model", student, "--device", "cuda:0", "--out", tmp_path / "e"), "eval", "--device")
    _one_error_line(_main(capsys, "eval", "--model", student, "--device", "gpu7", "--out", tmp_path / "e"), "eval", "--device", "gpu7")


def test_unwritable_outputs_are_refused_before_the_work(student, tmp_path, capsys):
    src = _images(tmp_path / "in", n=1)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = _cli("eval", "--model", student, "--data", src, "--out", blocker / "eval")
    _one_error_line(result, "eval", "--out", str(blocker / "eval"))
    assert "PSNR" not in result.stdout  # refused before evaluating, not after
    _one_error_line(_main(capsys, "upscale", src, "-o", blocker / "up", "--model", student), "upscale", "-o")
    _one_error_line(_main(capsys, "export", "--model", student, "-o", blocker / "s.safetensors"), "export", "-o")
    _one_error_line(_main(capsys, "demo", "--out", blocker / "demo"), "demo", "--out")


def test_debug_shows_the_traceback(student, tmp_path):
    src = _images(tmp_path / "in", n=1)
    result = _cli("--debug", "upscale", src, "-o", tmp_path / "o", "--model", student, "--device", "cuda:99")
    assert result.returncode == 1 and "Traceback" in result.stderr and "--device" in result.stderr
    with pytest.raises(ValueError, match="--device"):  # also accepted after the command
        main(["upscale", str(src), "-o", str(tmp_path / "o"), "--model", str(student), "--device", "cuda:99", "--debug"])


def test_width_outside_the_file_is_refused(tmp_path, capsys):
    teacher = build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=1)
    path = save_student(teacher, tmp_path / "teacher.safetensors", width=0.5, kind="teacher")
    src = _images(tmp_path / "in", n=1)
    _one_error_line(_cli("upscale", src, "-o", tmp_path / "o", "--model", path, "--width", "0"), "upscale", "--width", "0")
    for width in ("-0.5", "1.5", "0.01"):  # 0.01 of 8 features is no channel at all
        _one_error_line(_main(capsys, "upscale", src, "-o", tmp_path / "o", "--model", path, "--width", width),
                        "upscale", "--width")
    _one_error_line(_main(capsys, "eval", "--model", path, "--data", src, "--width", "0.5", "0", "--out", tmp_path / "e"),
                    "eval", "--width")
    assert not (tmp_path / "e" / "eval.csv").exists()
    student = save_student(teacher.export(0.5), tmp_path / "student.safetensors", width=0.5)
    _one_error_line(_main(capsys, "upscale", src, "-o", tmp_path / "o", "--model", student, "--width", "0.25"),
                    "upscale", "--width", "exported student")
    assert _main(capsys, "upscale", src, "-o", tmp_path / "o", "--model", student, "--width", "0.5", "--quiet").returncode == 0


def test_a_trainer_into_a_folder_another_run_holds_fails_at_once(tmp_path):
    from csd_fast.losses import ContrastiveLoss
    from csd_fast.trainer import CSDTrainer
    from helpers import PairSet, TinyEncoder

    out = tmp_path / "run"
    with _holding(out) as holder:
        trainer = CSDTrainer(build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=1), width=0.5, neg_num=2,
                             out_dir=str(out), contrastive=ContrastiveLoss(encoder=TinyEncoder(), weights=(1, 1)),
                             progress=False)
        with pytest.raises(RunDirLockedError, match=f"PID {holder.pid}"):
            trainer.fit(PairSet(), steps=3, batch_size=4)
    assert not (out / "log.csv").exists() and not (out / "checkpoint.pt").exists()
