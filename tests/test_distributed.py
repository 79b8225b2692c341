"""DDP on CPU (gloo, loopback): two ranks on halves of each global batch end with the weights of one
process on the whole batch, and with identical weights on every rank.

A non-finite loss on one rank stops every rank (none is left waiting in a collective).

With the official (default) negatives and reduction: the LR shards are gathered, so the K = 10
negatives come from the global batch (each rank holds only 6 of the 12 images), the same K for
every anchor on every rank, and the "batch" means are over the global batch (the contrastive
numerators and denominators are summed across ranks): the same step as one process. The per-sample
setting ("self-blur", "sample") is checked through torchrun and the CLI.
"""
import os
import socket
import subprocess
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _sr_folders import make_folder, tiny_train_args
from csd_fast.checkpoint import load_checkpoint
from csd_fast.cli import main
from csd_fast.data import PatchDataset
from csd_fast.models import build_model
from csd_fast.trainer import CSDTrainer

STEPS, BATCH = 2, 12  # K = 10 (the default) > the 6 images of each rank


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(out_path) -> CSDTrainer:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    images = [torch.rand(3, 24 + 4 * i, 28, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    data = PatchDataset(images, scale=2, patch_size=16)  # random crops + flips: seeded per item
    model = build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=1)
    trainer = CSDTrainer(model, width=0.5, lr=1e-3, progress=False)  # official negatives, K = 10, lambda_c 200
    assert (trainer.negatives, trainer.neg_num, trainer.contrastive.reduction) == ("official", 10, "batch")
    trainer.fit(data, steps=STEPS, batch_size=BATCH)
    torch.save({"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict()["state"],
                "history": trainer.history, "grad": {n: p.grad for n, p in trainer.model.named_parameters()}}, out_path)
    return trainer


def _worker(rank, world, port, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        trainer = _train(os.path.join(folder, f"rank{rank}.pt"))
        lr = torch.rand(6, 3, 8, 8)
        if rank == 1:
            lr[0, 0, 0, 0] = float("nan")  # a bad pixel in one rank's shard only
        try:
            trainer.train_step(lr, torch.rand(6, 3, 16, 16))
            outcome = "trained"
        except FloatingPointError:
            outcome = "stopped"
        with open(os.path.join(folder, f"nan{rank}.txt"), "w") as f:
            f.write(outcome)
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    _train(tmp_path / "single.pt")
    r0, r1, single = (torch.load(tmp_path / f"{n}.pt") for n in ("rank0", "rank1", "single"))
    for key in r0["model"]:
        torch.testing.assert_close(r0["model"][key], r1["model"][key], atol=0, rtol=0)  # ranks in lock-step
        torch.testing.assert_close(r0["model"][key], single["model"][key], atol=1e-6, rtol=1e-5)
        if key in single["grad"]:  # the last step's gradient (DDP-averaged) equals one process's
            g = single["grad"][key]
            torch.testing.assert_close(r0["grad"][key], g, atol=1e-6 * g.abs().max().item(), rtol=1e-4)
    for a, b in zip(r0["history"], single["history"]):  # the logged terms are the global batch's
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-5 * max(1.0, abs(b[k])) for k in a)
    assert [(tmp_path / f"nan{r}.txt").read_text() for r in (0, 1)] == ["stopped", "stopped"]  # no rank left waiting
    initial = build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=1)
    assert not torch.equal(initial.state_dict()["head.weight"], r0["model"]["head.weight"])  # it did train


def test_torchrun_cli_matches_single_process(tmp_path):
    hr = make_folder(tmp_path / "hr", n=3, size=32)
    common = dict(negatives="self-blur", neg_num=1, reduction="sample", device="cpu")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "csd_fast",
           *tiny_train_args(tmp_path / "ddp", hr, steps=2, **common)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(tiny_train_args(tmp_path / "one", hr, steps=2, **common)) == 0
    ddp, one = (load_checkpoint(str(tmp_path / d / "checkpoint.pt")) for d in ("ddp", "one"))
    assert ddp["step"] == one["step"] == 2
    for key, value in one["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, atol=1e-5, rtol=1e-4)
    assert (tmp_path / "ddp" / "student.safetensors").is_file()  # rank 0 finished the run's outputs
