"""CSDTrainer: the objective, gradient routing, NaN stop, checkpoints and resume."""
import json
import os

import pytest
import torch
import torch.nn.functional as F

from csd_fast.checkpoint import atomic_save, load_checkpoint
from csd_fast.losses import ContrastiveLoss
from csd_fast.models import SlimEDSR
from csd_fast.negatives import make_negatives
from csd_fast.trainer import CSDTrainer
from helpers import PairSet, TinyEncoder


def tiny_trainer(tmp_path=None, **kw):
    torch.manual_seed(0)
    model = SlimEDSR(scale=2, n_feats=8, n_resblocks=2, res_scale=1.0)
    kw.setdefault("contrastive", ContrastiveLoss(encoder=TinyEncoder(), weights=(0.5, 1.0)))
    return CSDTrainer(model, width=0.5, neg_num=3, out_dir=None if tmp_path is None else str(tmp_path),
                      progress=False, **kw)


def test_objective_is_l1_terms_plus_weighted_contrastive():
    trainer = tiny_trainer(lambda_t=0.7, lambda_c=3.0)
    lr, hr = torch.rand(4, 3, 6, 6), torch.rand(4, 3, 12, 12)
    torch.manual_seed(5)
    loss, terms = trainer.compute_loss(lr, hr)
    torch.manual_seed(5)  # same negatives
    neg = make_negatives("official", lr, 3, 2)
    s, t = trainer.model(lr, 0.5), trainer.model(lr, 1.0)
    cl = trainer.contrastive(s, t, neg)
    expected = 255 * F.l1_loss(s, hr) + 0.7 * 255 * F.l1_loss(t, hr) + 3.0 * cl
    torch.testing.assert_close(loss, expected)
    assert set(terms) == {"loss", "l1_student", "l1_teacher", "contrastive"}


def test_contrastive_term_sends_no_gradient_to_teacher_only_weights():
    # With lambda_t = 0 only the student path and CL act: weights outside the slice stay untouched.
    trainer = tiny_trainer(lambda_t=0.0, lambda_c=5.0)
    loss, _ = trainer.compute_loss(torch.rand(4, 3, 6, 6), torch.rand(4, 3, 12, 12))
    loss.backward()
    g = trainer.model.body[0].conv1.weight.grad
    assert g[:4, :4].abs().sum() > 0
    assert g[4:].abs().sum() == 0 and g[:, 4:].abs().sum() == 0


def test_nan_batch_stops_without_update_or_checkpoint(tmp_path):
    trainer = tiny_trainer(tmp_path)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    lr = torch.rand(4, 3, 6, 6)
    lr[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="step 1"):
        trainer.train_step(lr, torch.rand(4, 3, 12, 12))
    for k, v in trainer.model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert not os.path.exists(tmp_path / "checkpoint.pt")


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    data = PairSet()
    full = tiny_trainer(tmp_path / "full", checkpoint_every=2, lr_milestones=[3])
    full.fit(data, steps=4, batch_size=4)
    part = tiny_trainer(tmp_path / "part", checkpoint_every=2, lr_milestones=[3])
    part.fit(data, steps=2, batch_size=4)  # as if killed after step 2's checkpoint ...
    with open(tmp_path / "part" / "log.csv", "a") as f:
        f.write("3,0.0001,1.0,,,,,\n")  # ... and after logging step 3, which is lost
    resumed = tiny_trainer(tmp_path / "part", checkpoint_every=2, lr_milestones=[3])
    resumed.fit(data, steps=4, batch_size=4, resume=True)
    assert resumed.step_count == 4 and [r["step"] for r in resumed.history] == [1, 2, 3, 4]
    log_steps = [line.split(",")[0] for line in (tmp_path / "part" / "log.csv").read_text().splitlines()[1:]]
    assert log_steps == ["1", "2", "3", "4"]
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0)


def test_fit_validates_writes_log_and_exports(tmp_path):
    trainer = tiny_trainer(tmp_path, val_every=2)
    history = trainer.fit(PairSet(), steps=2, batch_size=4, val_set=[PairSet()[0]])
    assert "psnr_teacher" in history[-1] and "psnr_student" in history[-1]
    lines = (tmp_path / "log.csv").read_text().splitlines()
    assert lines[0].startswith("step,") and len(lines) == 3
    state = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert os.stat(tmp_path / "checkpoint.pt").st_mode & 0o044  # readable by others, not mkstemp's 0600
    assert state["step"] == 2 and state["arch"] == "edsr"
    student = trainer.export()
    assert student.config["n_feats"] == 4


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    tiny_trainer(tmp_path).fit(PairSet(), steps=1, batch_size=4)
    other = CSDTrainer(SlimEDSR(scale=2, n_feats=16, n_resblocks=2), width=0.5, neg_num=2, out_dir=str(tmp_path),
                       contrastive=ContrastiveLoss(encoder=TinyEncoder(), weights=(1, 1)), progress=False)
    with pytest.raises(ValueError, match="checkpoint"):
        other.fit(PairSet(), steps=2, batch_size=4, resume=True)


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = str(tmp_path / "ck.pt")
    atomic_save({"step": 1}, path)

    def full_disk(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"step": 1}
    assert os.listdir(tmp_path) == ["ck.pt"]


@pytest.mark.parametrize(
    "kw, match",
    [({"width": 1.5}, "width"), ({"width": 0.01}, "0 channels"), ({"neg_num": 0}, "neg_num"),
     ({"lambda_c": -1.0}, "lambda_c"), ({"lambda_t": float("nan")}, "lambda_t"),
     ({"negatives": "bogus"}, "negatives: expected one of"), ({"vgg_input": "bgr"}, "vgg_input"),
     ({"lr_milestones": [0.5, -1]}, "lr_milestones"), ({"betas": [0.9]}, "betas"), ({"checkpoint_every": 0}, "checkpoint_every")],
)
def test_bad_arguments_are_named(kw, match):
    model = SlimEDSR(scale=2, n_feats=8, n_resblocks=1)
    args = dict(width=0.5, neg_num=2, contrastive=ContrastiveLoss(encoder=TinyEncoder(), weights=(1, 1)))
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        CSDTrainer(model, **args)


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match="teacher_state_dict: not an option of CSDTrainer"):
        tiny_trainer(teacher_state_dict={})


def test_bad_fit_arguments():
    trainer = tiny_trainer()
    with pytest.raises(ValueError, match="steps"):
        trainer.fit(PairSet(), steps=0)
    with pytest.raises(TypeError, match="model"):
        CSDTrainer(torch.nn.Conv2d(3, 3, 3))


def test_step_decay_follows_the_absolute_step_across_fit_calls():
    # Milestones at steps 2 and 4, gamma 0.5: step k (1-based) runs at 1e-4 * 0.5 ** #{m < k}.
    once = tiny_trainer(lr_milestones=[2, 4], lr_gamma=0.5)
    once.fit(PairSet(), steps=5, batch_size=4)
    twice = tiny_trainer(lr_milestones=[2, 4], lr_gamma=0.5)
    twice.fit(PairSet(), steps=3, batch_size=4)
    twice.fit(PairSet(), steps=5, batch_size=4)
    expected = [1e-4 * 0.5 ** sum(m < k for m in (2, 4)) for k in range(1, 6)]
    for trainer in (once, twice):
        assert [r["lr"] for r in trainer.history] == pytest.approx(expected, rel=1e-12)


def test_default_schedule_is_x0_1_at_half_and_resume_never_raises_the_rate(tmp_path):
    """Official schedule: x0.1 at half of the run (epoch 200 of 400). A 4-step run decays after step 2;
    resumed with steps=12 its milestone stays at step 2 (fixed when the run started): 1e-5 to the end."""
    first = tiny_trainer(tmp_path)
    first.fit(PairSet(), steps=4, batch_size=4)
    assert [r["lr"] for r in first.history] == pytest.approx([1e-4, 1e-4, 1e-5, 1e-5], rel=1e-12)
    resumed = tiny_trainer(tmp_path)
    resumed.fit(PairSet(), steps=12, batch_size=4, resume=True)
    assert [r["lr"] for r in resumed.history] == pytest.approx([1e-4] * 2 + [1e-5] * 10, rel=1e-12)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5, rel=1e-12)


def test_resume_refuses_changed_options_and_names_them(tmp_path):
    tiny_trainer(tmp_path, lambda_c=1.0).fit(PairSet(), steps=1, batch_size=4)
    with pytest.raises(ValueError, match=r"lambda_c \(checkpoint 1.0, now 2.0\), reduction"):
        tiny_trainer(tmp_path, lambda_c=2.0, reduction="sample").fit(PairSet(), steps=2, batch_size=4, resume=True)
    with pytest.raises(ValueError, match="batch"):
        tiny_trainer(tmp_path, lambda_c=1.0).fit(PairSet(), steps=2, batch_size=2, resume=True)
    allowed = tiny_trainer(tmp_path, lambda_c=2.0, allow_changed=["lambda_c"])
    allowed.fit(PairSet(), steps=2, batch_size=4, resume=True)  # allowed explicitly; steps may change freely
    assert allowed.step_count == 2
    state = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert state["format_version"] == 2 and state["options"]["lambda_c"] == 2.0
    assert state["options"]["vgg_input"] == "official" and state["options"]["negatives"] == "official"
    with pytest.raises(ValueError, match="allow_changed"):
        tiny_trainer(tmp_path, allow_changed=["steps"])  # not a checked option


def test_config_json_is_written_when_the_run_starts(tmp_path):
    trainer = tiny_trainer(tmp_path)
    seen = {}
    original = trainer.train_step

    def spy(lr, hr):
        seen["config"] = json.loads((tmp_path / "config.json").read_text())
        seen["log_rows"] = len((tmp_path / "log.csv").read_text().splitlines()) if (tmp_path / "log.csv").exists() else 0
        return original(lr, hr)

    trainer.train_step = spy
    trainer.fit(PairSet(), steps=2, batch_size=4)
    assert seen["config"]["options"]["width"] == 0.5 and seen["config"]["arch"] == "edsr"
    assert seen["log_rows"] == 2  # header + step 1 streamed before step 2 ran


def test_non_finite_parameters_are_never_checkpointed(tmp_path):
    trainer = tiny_trainer(tmp_path)
    trainer.fit(PairSet(), steps=1, batch_size=4)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with torch.no_grad():
        trainer.model.body[1].conv2.bias[0] = float("inf")  # e.g. an overflowing update whose loss was finite
    with pytest.raises(FloatingPointError, match="parameters: 1 hold NaN/Inf after step 1 \\(first: body.1.conv2.bias\\)"):
        trainer.save()
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    with pytest.raises(ValueError, match="lr: expected float > 0.0, got inf"):
        tiny_trainer(tmp_path, lr=float("inf"))
    with pytest.raises(ValueError, match=r"lr_milestones: expected fractions < 1 or whole step numbers, got \[2.5\]"):
        tiny_trainer(tmp_path, lr_milestones=[0.5, 2.5])


def test_load_teacher_and_old_checkpoints(tmp_path):
    """``load_teacher(path)`` starts from a teacher file of the same model; a checkpoint of the [0, 1]-unit
    format (no format_version) still loads as a teacher, converted, but a run does not resume from it."""
    source = tiny_trainer()
    with torch.no_grad():
        for p in source.model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    old_units = {k: (v / 255 if k.endswith(".bias") else v).clone() for k, v in source.model.state_dict().items()}
    old = {"step": 3, "arch": "edsr", "model_config": source.model.config, "width": 0.5, "model": old_units,
           "optimizer": {}, "history": []}
    torch.save(old, tmp_path / "checkpoint.pt")
    trainer = tiny_trainer(tmp_path)
    trainer.load_teacher(tmp_path / "checkpoint.pt")
    for k, v in source.model.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[k], v, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="format version None .*resumes only from a checkpoint of this version"):
        trainer.resume()
    other = CSDTrainer(SlimEDSR(scale=2, n_feats=16, n_resblocks=2), width=0.5, neg_num=2, progress=False,
                       contrastive=ContrastiveLoss(encoder=TinyEncoder(), weights=(1, 1)))
    with pytest.raises(ValueError, match="but the trainer's model is edsr"):
        other.load_teacher(tmp_path / "checkpoint.pt")


def test_signal_flag_records_one_signal_and_lets_a_second_through():
    import signal

    from csd_fast.trainer import _SignalFlag

    with _SignalFlag() as flag:
        os.kill(os.getpid(), signal.SIGINT)  # recorded, not raised
        assert flag.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second one is Python's usual Ctrl-C
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        flag.deliver()  # the recorded one, delivered after the checkpoint
