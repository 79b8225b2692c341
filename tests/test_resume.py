"""Robustness: a training run killed with SIGKILL and resumed ends with the weights, optimizer and
scheduler state of an uninterrupted run; a failing checkpoint write never destroys the last one."""
import errno
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import csd_fast.checkpoint
from _sr_folders import make_folder, tiny_train_args
from csd_fast.checkpoint import load_checkpoint
from csd_fast.cli import main
from csd_fast.data import PatchDataset
from csd_fast.models import build_model
from csd_fast.trainer import CSDTrainer

STEPS = 6


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] == STEPS
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, atol=1e-5, rtol=1e-4)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(sb[i][name], sa[i][name], atol=1e-6, rtol=1e-4)
    assert a["scheduler"] == b["scheduler"]
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    hr = make_folder(tmp_path / "hr", n=3, size=32)
    args = dict(steps=STEPS, checkpoint_every=2)  # contrastive on, official negatives: every step's draws are seeded
    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-m", "csd_fast", *tiny_train_args(killed, hr, **args)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not (killed / "checkpoint.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    at_kill = load_checkpoint(str(killed / "checkpoint.pt"))["step"]
    assert 2 <= at_kill < STEPS  # killed mid-run, after its first checkpoint

    steps_run = []
    original = CSDTrainer.train_step
    monkeypatch.setattr(CSDTrainer, "train_step", lambda self, lr, hr: steps_run.append(1) or original(self, lr, hr))
    assert main(tiny_train_args(killed, hr, resume=True, **args)) == 0
    assert len(steps_run) == STEPS - at_kill  # it resumed: only the lost steps were trained again
    assert main(tiny_train_args(tmp_path / "straight", hr, **args)) == 0
    _assert_same_state(load_checkpoint(str(tmp_path / "straight" / "checkpoint.pt")),
                       load_checkpoint(str(killed / "checkpoint.pt")))


@pytest.fixture
def trainer_with_checkpoint(tmp_path):
    images = [torch.rand(3, 24, 24) for _ in range(3)]
    model = build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=1)
    trainer = CSDTrainer(model, width=0.5, lambda_c=0.0, out_dir=str(tmp_path / "run"), progress=False)
    trainer.fit(PatchDataset(images, scale=2, patch_size=16), steps=2, batch_size=2)
    return trainer, tmp_path / "run" / "checkpoint.pt"


def test_failing_write_keeps_previous_checkpoint(trainer_with_checkpoint, monkeypatch):
    trainer, path = trainer_with_checkpoint
    before = path.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csd_fast.checkpoint.torch, "save", disk_full)
    trainer.step_count = 7
    with pytest.raises(OSError, match="No space left"):
        trainer.save()
    assert path.read_bytes() == before
    assert load_checkpoint(str(path))["step"] == 2
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".tmp")) == []  # no litter


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_folder_keeps_previous_checkpoint(trainer_with_checkpoint):
    trainer, path = trainer_with_checkpoint
    before = path.read_bytes()
    os.chmod(path.parent, 0o555)
    try:
        with pytest.raises(PermissionError):
            trainer.save()
    finally:
        os.chmod(path.parent, 0o755)
    assert path.read_bytes() == before


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_writes_a_checkpoint_of_the_finished_steps(tmp_path, sig, status):
    """Ctrl-C / SIGTERM: the current step finishes, a checkpoint of every finished step is written
    (none was due: checkpoint_every is larger than the run), then the process ends as the signal
    says (shell status 130 / 143)."""
    hr = make_folder(tmp_path / "hr", n=3, size=32)
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-m", "csd_fast", *tiny_train_args(out, hr, steps=10_000, checkpoint_every=10_000)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not (out / "log.csv").exists() or len((out / "log.csv").read_text().splitlines()) < 3:  # 2 steps done
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no 2 steps within 180 s"
            time.sleep(0.01)
        assert not (out / "checkpoint.pt").exists()
        os.kill(proc.pid, sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (-sig, status), proc.stderr.read().decode()[-2000:]  # killed by it = shell's 128 + n
    state = load_checkpoint(str(out / "checkpoint.pt"))
    logged = len((out / "log.csv").read_text().splitlines()) - 1
    assert state["step"] == logged >= 2 and len(state["history"]) == logged
