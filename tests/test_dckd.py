"""DCKD: degradations, the history model's EMA/refresh schedule, dynamic negatives, KDTrainer, DMM."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from csd_fast.checkpoint import load_checkpoint
from csd_fast.degradations import (
    DEGRADATIONS, add_gaussian_noise, augment, degrade, draw_augmentations, gaussian_blur, random_resize,
    revert_augmentation,
)
from csd_fast.history import DynamicNegatives, refresh_interval, scaled_schedule
from csd_fast.kd import DMMLoss, KDTrainer
from csd_fast.losses import ContrastiveLoss
from csd_fast.models import SlimCARN, SlimEDSR
from csd_fast.trainer import CSDTrainer
from helpers import PairSet, TinyEncoder


class Scalar(nn.Module):
    """One parameter and one buffer: EMA values are easy to compute by hand."""

    def __init__(self, value):
        super().__init__()
        self.p = nn.Parameter(torch.tensor([float(value)]))
        self.register_buffer("b", torch.tensor([float(value)]))

    def forward(self, x):
        return x * self.p


def tiny_edsr(feats=8):
    return SlimEDSR(scale=2, n_feats=feats, n_resblocks=1, res_scale=1.0)


def tiny_cl():
    return ContrastiveLoss(encoder=TinyEncoder(), weights=(0.5, 1.0))


def kd_trainer(tmp_path=None, **kw):
    torch.manual_seed(0)
    teacher, student = tiny_edsr(16), SlimCARN(scale=2, n_feats=8)
    kw.setdefault("encoder", TinyEncoder())
    kw.setdefault("encoder_weights", (0.5, 1.0))
    trainer = KDTrainer(teacher, student, progress=False, out_dir=None if tmp_path is None else str(tmp_path), **kw)
    return trainer, teacher, student


# ----------------------------------------------------------------- degradations
def test_noise_sigma_stays_in_1_to_30_over_255():
    x = torch.full((300, 3, 48, 48), 0.5)
    torch.manual_seed(1)
    std = (add_gaussian_noise(x) - x).flatten(1).std(1) * 255
    assert std.min() > 0.9 and std.max() < 30 * 1.05
    assert std.min() < 4 and std.max() > 26  # the whole range is drawn, not one sigma
    std = (add_gaussian_noise(x, sigma_range=(10 / 255, 10 / 255)) - x).flatten(1).std(1) * 255
    torch.testing.assert_close(std, torch.full_like(std, 10.0), atol=0.6, rtol=0)


def test_noise_follows_basicsr_draw_for_draw():
    """BasicSR's random_add_gaussian_noise_pt (sigma_range [1, 30], gray_prob 0.5, clip, no
    rounding), restated: sigma and grey flags per image, ONE grey [H, W] field for the batch
    (drawn only if some image is grey), then colour noise for every image."""
    x = torch.rand(6, 3, 5, 7)
    torch.manual_seed(3)
    got = add_gaussian_noise(x)
    torch.manual_seed(3)
    sigma = torch.rand(6) * 29 + 1
    grey = (torch.rand(6) < 0.5).float().view(6, 1, 1, 1)
    field = torch.randn(5, 7) * sigma.view(6, 1, 1, 1) / 255
    colour = torch.randn(6, 3, 5, 7) * sigma.view(6, 1, 1, 1) / 255
    expected = (x + colour * (1 - grey) + field.view(6, 1, 5, 7) * grey).clamp(0, 1)
    assert 0 < grey.sum() < 6
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_grey_noise_field_is_shared_by_the_batch():
    x = torch.full((64, 3, 8, 8), 0.5)
    torch.manual_seed(4)
    noise = add_gaussian_noise(x) - x
    grey = (noise[:, 0] == noise[:, 1]).flatten(1).all(1) & (noise[:, 0] == noise[:, 2]).flatten(1).all(1)
    unit = noise[grey, 0] / noise[grey, 0].flatten(1).std(1).view(-1, 1, 1)
    assert grey.sum() > 10
    torch.testing.assert_close(unit, unit[:1].expand_as(unit), rtol=1e-4, atol=1e-4)  # one field, scaled per image


def test_grey_noise_is_shared_by_channels_with_probability_half():
    x = torch.full((1000, 3, 8, 8), 0.5)
    torch.manual_seed(2)
    noise = add_gaussian_noise(x) - x
    grey = (noise[:, 0] == noise[:, 1]).flatten(1).all(1) & (noise[:, 0] == noise[:, 2]).flatten(1).all(1)
    assert abs(grey.float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / 1000)
    assert not (add_gaussian_noise(x, gray_prob=0.0) - x).diff(dim=1).eq(0).flatten(1).all(1).any()
    assert (add_gaussian_noise(x, gray_prob=1.0) - x).diff(dim=1).eq(0).all()


@pytest.mark.parametrize("kind", sorted(DEGRADATIONS))
def test_degradations_keep_shape_and_range(kind):
    x = torch.rand(3, 3, 20, 26)
    y = degrade(x, [kind])
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.equal(y, x)


def test_blur_keeps_flat_images_and_smooths_noise():
    flat = torch.full((2, 3, 24, 24), 0.3)
    torch.testing.assert_close(gaussian_blur(flat), flat)
    x = torch.rand(4, 3, 24, 24)
    assert gaussian_blur(x, sigma_range=(1.5, 2.0)).std() < 0.6 * x.std()
    assert random_resize(x).shape == x.shape


@pytest.mark.parametrize("call, match", [
    (lambda x: add_gaussian_noise(x, sigma_range=(0.2, 0.1)), "sigma_range"),
    (lambda x: add_gaussian_noise(x, gray_prob=1.5), "gray_prob"),
    (lambda x: gaussian_blur(x, kernel_range=(3, 10)), "kernel_range"),
    (lambda x: degrade(x, ["jpeg"]), "kinds"),
    (lambda x: degrade(x, "noise"), "kinds"),
])
def test_bad_degradation_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.rand(1, 3, 16, 16))


# ----------------------------------------------------------------- teacher augmentation
def _augment_one(img, ops):
    """The official ``noising`` on one [C, H, W] image, written out: invert (1 - x), flip H, flip W, transpose."""
    invert, flip_h, flip_w, transpose = ops
    if invert:
        img = 1 - img
    if flip_h:
        img = img[:, torch.arange(img.shape[1] - 1, -1, -1)]
    if flip_w:
        img = img[:, :, torch.arange(img.shape[2] - 1, -1, -1)]
    if transpose:
        img = img.permute(0, 2, 1)
    return img


def _revert_one(img, ops):
    """The official ``noising(revert=True)``: transpose, flip W, flip H, invert (reverse order)."""
    invert, flip_h, flip_w, transpose = ops
    if transpose:
        img = img.permute(0, 2, 1)
    if flip_w:
        img = img[:, :, torch.arange(img.shape[2] - 1, -1, -1)]
    if flip_h:
        img = img[:, torch.arange(img.shape[1] - 1, -1, -1)]
    if invert:
        img = 1 - img
    return img


def test_augment_and_revert_match_the_official_noising_for_all_16_combinations():
    combos = torch.tensor([[(c >> k) & 1 for c in range(16)] for k in range(4)], dtype=torch.bool)  # [4, 16]
    x = torch.rand(16, 3, 5, 5)
    y = augment(x, combos)
    for b in range(16):
        torch.testing.assert_close(y[b], _augment_one(x[b], combos[:, b].tolist()), rtol=0, atol=0)
    out = torch.rand(16, 3, 10, 10)  # e.g. a teacher's output on y
    back = revert_augmentation(out, combos)
    for b in range(16):
        torch.testing.assert_close(back[b], _revert_one(out[b], combos[:, b].tolist()), rtol=0, atol=0)
    torch.testing.assert_close(revert_augmentation(y, combos), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="square"):
        augment(torch.rand(2, 3, 4, 6), combos[:, :2])


def test_augmentations_are_drawn_per_image_with_probability_half():
    torch.manual_seed(6)
    ops = draw_augmentations(4000)
    assert ops.shape == (4, 4000) and ops.dtype == torch.bool
    assert (ops.float().mean(1) - 0.5).abs().max() < 4 * math.sqrt(0.25 / 4000)
    assert not ops[0].equal(ops[1])  # independent kinds
    assert not draw_augmentations(10, prob=0.0).any() and draw_augmentations(10, prob=1.0).all()


class UpNearest(nn.Module):
    """x2 nearest upsampling: commutes with flips, transpose and 1 - x, so A^-1(T(A(x))) = T(x)."""

    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest")


class UpRamp(UpNearest):
    """Nearest upsampling plus a ramp along W: not flip-equivariant."""

    def forward(self, x):
        return super().forward(x) + torch.linspace(0, 0.1, 2 * x.shape[-1])


def test_kd_augmentation_term_against_the_official_statement():
    torch.manual_seed(0)
    student = SlimCARN(scale=2, n_feats=8)
    trainer = KDTrainer(UpRamp(), student, lambda_c=0.0, contrastive=tiny_cl(), progress=False)
    assert trainer.lambda_aug == 1.0 and trainer.aug_prob == 0.5
    lr, hr = torch.rand(6, 3, 8, 8), torch.rand(6, 3, 16, 16)
    torch.manual_seed(7)
    loss, terms = trainer.compute_loss(lr, hr)
    torch.manual_seed(7)
    ops = torch.rand(4, 6) < 0.5  # per image, per kind (invert, flip H, flip W, transpose), p = 0.5
    teacher = UpRamp()
    t_aug = torch.stack([_revert_one(teacher(_augment_one(lr[b], ops[:, b].tolist())[None])[0], ops[:, b].tolist())
                         for b in range(6)])
    s, t = student(lr), teacher(lr)
    expected = 255 * F.l1_loss(s, hr) + 255 * F.l1_loss(s, t) + 255 * F.l1_loss(s, t_aug)
    torch.testing.assert_close(loss, expected)
    assert set(terms) == {"loss", "l1_student", "l1_kd", "l1_aug"}
    assert not torch.allclose(t_aug, t)  # the ramp teacher is not equivariant: the term is not L1(S, T)
    eq = KDTrainer(UpNearest(), student, lambda_c=0.0, contrastive=tiny_cl(), progress=False)
    torch.testing.assert_close(eq.teacher_on_augmented(lr), UpNearest()(lr), rtol=0, atol=1e-6)


# ----------------------------------------------------------------- history model
def test_refresh_interval_grows_by_thirds_of_training():
    got = [refresh_interval(t, 30, (2, 4, 6), schedule="thirds") for t in range(1, 31)]
    assert got == [2] * 10 + [4] * 10 + [6] * 10
    assert refresh_interval(7, None, (2, 4, 6), schedule="thirds") == 2
    assert scaled_schedule(250_000) == {"decay": pytest.approx(0.999), "intervals": (1000, 2000, 3000), "schedule": "thirds"}
    assert scaled_schedule(2_500) == {"decay": pytest.approx(0.9), "intervals": (10, 20, 30), "schedule": "thirds"}


def test_official_refresh_steps_phases_of_fixed_length():
    """Official: phase i = (step - 1) // 100k, refresh when step % s[i] == 0, s = 1000, 2000, 3000."""
    dyn = DynamicNegatives(Scalar(0.0), n=2)
    assert dyn.schedule == "official" and dyn.phase_steps == 100_000 and dyn.intervals == (1000, 2000, 3000)
    refreshes = {1000: True, 1500: False, 99_000: True, 100_000: True, 101_000: False, 102_000: True,
                 200_000: True, 201_000: True, 202_000: False, 203_000: False, 204_000: True, 250_000: False,
                 300_000: True, 301_000: False, 303_000: True}  # past the last phase: s = 3000
    assert {t: dyn.refresh_due(t) for t in refreshes} == refreshes
    # the run length does not matter to the official schedule
    assert all(dyn.refresh_due(t, 1000) == due for t, due in refreshes.items())
    small = DynamicNegatives(Scalar(0.0), n=2, decay=0.5, intervals=(2, 3, 5), phase_steps=4)
    done = [t for t in range(1, 17) if small.update(Scalar(1.0), t)]
    assert done == [2, 4, 6, 10, 15]  # steps 1-4: s 2; 5-8: s 3; 9-12: s 5; 13-16: s 5 (last holds)


def test_ema_values_and_refresh_times_after_known_steps():
    student = Scalar(0.0)
    dyn = DynamicNegatives(student, n=2, decay=0.5, refresh_decay=0.1, intervals=(2, 3), schedule="thirds")
    student.p.data.fill_(1.0)
    student.b.fill_(7.0)
    refreshed, hist = [], 0.0
    for t in range(1, 11):  # steps 1-5: s = 2; steps 6-10: s = 3
        if dyn.update(student, t, total_steps=10):
            refreshed.append(t)
            hist = 0.1 * hist + 0.9 * (1 - 0.5**t)
        assert dyn.ema.p.item() == pytest.approx(1 - 0.5**t)  # ema_t = 1 + (0 - 1) * decay^t
        assert dyn.history.p.item() == pytest.approx(hist)
    assert refreshed == [2, 4, 7, 10]
    assert dyn.ema.b.item() == 7.0 and dyn.history.b.item() == 7.0  # buffers are copied
    assert student.p.item() == 1.0  # the student is only read


def test_dynamic_negatives_shape_index_and_clean_first():
    model = tiny_edsr()
    dyn = DynamicNegatives(model, n=5, width=0.5)
    lr = torch.rand(3, 3, 8, 8)
    neg = dyn(lr)
    assert neg.images.shape == (15, 3, 16, 16) and not neg.images.requires_grad
    assert torch.equal(neg.index, torch.arange(15).view(5, 3))
    torch.testing.assert_close(neg.images[:3], model(lr, 0.5).detach())  # clean LR first (official code)
    neg = DynamicNegatives(model, n=2, width=0.5, include_clean=False)(lr)
    assert neg.images.shape[0] == 6 and not torch.allclose(neg.images[:3], model(lr, 0.5).detach())


@pytest.mark.parametrize("kw, match", [
    ({"n": 1}, "n:"), ({"decay": 1.0}, "decay"), ({"intervals": (0,)}, "intervals"),
    ({"degradations": ("jpeg",)}, "degradations"), ({"schedule": "halves"}, "schedule"),
    ({"phase_steps": 0}, "phase_steps"),
])
def test_bad_dynamic_arguments_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        DynamicNegatives(tiny_edsr(), **kw)


def test_csd_dynamic_mode_defaults_and_gradients():
    trainer = CSDTrainer(tiny_edsr(), width=0.5, negatives="dynamic", contrastive=tiny_cl(), progress=False)
    assert trainer.neg_num == 5 and trainer.lambda_c == pytest.approx(0.1 * 255)
    loss, terms = trainer.compute_loss(torch.rand(4, 3, 8, 8), torch.rand(4, 3, 16, 16))
    loss.backward()
    assert terms["contrastive"] > 0
    frozen = list(trainer.dynamic.ema.parameters()) + list(trainer.dynamic.history.parameters())
    assert all(not p.requires_grad and p.grad is None for p in frozen)
    assert all(p.grad is not None for p in trainer.model.parameters())
    assert not any(p is q for p in frozen for g in trainer.optimizer.param_groups for q in g["params"])


def test_dynamic_history_is_checkpointed_and_resumed(tmp_path):
    data = PairSet(n=6, size=16)
    opts = {"decay": 0.5, "intervals": (2,)}
    torch.manual_seed(0)
    a = CSDTrainer(tiny_edsr(), width=0.5, negatives="dynamic", dynamic_options=opts, contrastive=tiny_cl(),
                   out_dir=str(tmp_path), progress=False)
    a.fit(data, steps=3, batch_size=4)
    state = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert state["dynamic"]["last_refresh"] == 2
    torch.manual_seed(1)
    b = CSDTrainer(tiny_edsr(), width=0.5, negatives="dynamic", dynamic_options=opts, contrastive=tiny_cl(),
                   out_dir=str(tmp_path), progress=False, batch_size=4)  # the run's options, as recorded
    assert b.resume() and b.dynamic.last_refresh == 2
    for p, q in zip(a.dynamic.history.parameters(), b.dynamic.history.parameters()):
        assert torch.equal(p, q)


# ----------------------------------------------------------------- separate teacher
def test_kd_teacher_is_frozen_and_absent_from_optimizer_and_checkpoint(tmp_path):
    trainer, teacher, student = kd_trainer(tmp_path, dynamic_options={"intervals": (1,)})
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer.fit(PairSet(n=6, size=16), steps=2, batch_size=4)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    opt_params = [q for g in trainer.optimizer.param_groups for q in g["params"]]
    assert {id(p) for p in opt_params} == {id(p) for p in student.parameters()}
    state = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert state["model"].keys() == student.state_dict().keys() and state["arch"] == "carn"
    assert state["dynamic"] is not None


def test_kd_objective_and_gradient_routing():
    trainer, teacher, student = kd_trainer(negatives="official", neg_num=2, lambda_c=3.0, lambda_kd=0.5, lambda_aug=0.0)
    lr, hr = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 16, 16)
    torch.manual_seed(5)
    loss, terms = trainer.compute_loss(lr, hr)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    torch.manual_seed(5)
    s, t = student(lr), teacher(lr).detach()
    cl = trainer.contrastive(s, t, trainer.make_negatives(lr))
    expected = 255 * F.l1_loss(s, hr) + 0.5 * 255 * F.l1_loss(s, t) + 3.0 * cl
    torch.testing.assert_close(loss, expected)
    assert set(terms) == {"loss", "l1_student", "l1_kd", "contrastive"}


def test_kd_accepts_a_custom_encoder_and_checks_its_weights():
    enc = TinyEncoder()
    trainer, _, _ = kd_trainer(encoder=enc, encoder_weights=(1.0, 0.25), negatives="self-blur", neg_num=1)
    seen = enc.images_seen
    terms = trainer.train_step(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16))
    assert math.isfinite(terms["contrastive"]) and enc.images_seen > seen
    assert all(not p.requires_grad for p in enc.parameters())
    with pytest.raises(ValueError, match="encoder"):
        kd_trainer(encoder=TinyEncoder(), encoder_weights=(1.0,))[0].train_step(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="encoder_weights"):
        kd_trainer(encoder=TinyEncoder(), encoder_weights=None)


def test_kd_uses_the_official_dckd_optimizer_defaults():
    trainer, _, _ = kd_trainer(negatives="official", neg_num=2)
    assert trainer.optimizer.param_groups[0]["betas"] == (0.9, 0.99)
    history = trainer.fit(PairSet(n=6, size=16), steps=4, batch_size=4)
    assert [r["lr"] for r in history] == [1e-4] * 4  # constant rate (official: MultiStepLR at the last iteration)


def test_kd_refuses_a_teacher_at_another_scale_and_bad_arguments():
    teacher = SlimEDSR(scale=4, n_feats=8, n_resblocks=1)
    trainer = KDTrainer(teacher, SlimCARN(scale=2, n_feats=8), contrastive=tiny_cl(), progress=False)
    with pytest.raises(ValueError, match="teacher"):
        trainer.train_step(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="codebook"):
        kd_trainer(lambda_ce=0.1)
    with pytest.raises(TypeError, match="teacher"):
        KDTrainer(lambda x: x, SlimCARN(scale=2, n_feats=8), contrastive=tiny_cl())
    with pytest.raises(ValueError, match="aug_prob"):
        kd_trainer(aug_prob=1.5)
    with pytest.raises(ValueError, match="kind"):
        kd_trainer(codebook=torch.randn(5, 6), dmm="soft")


# ----------------------------------------------------------------- DMM
def test_dmm_official_soft_codes_match_hand_computation():
    """Official: q = softmax(-squared distances) for S and T; CE(input=q_S, target=q_T) with
    F.cross_entropy applying its own log-softmax to q_S: -sum_m q_T,m * log softmax(q_S)_m."""
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    teacher = torch.tensor([[0.9, 0.1], [0.0, 1.9]]).t().reshape(1, 2, 1, 2)
    student = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).t().reshape(1, 2, 1, 2)

    def softmax(v):
        e = [math.exp(-a) for a in v]
        return [a / sum(e) for a in e]

    d_teacher = [[0.82, 0.02, 4.42], [3.61, 4.61, 0.01]]  # |t_p - e_m|^2 by hand
    d_student = [[0.0, 1.0, 4.0], [2.0, 1.0, 2.0]]
    total = 0.0
    for dt, ds in zip(d_teacher, d_student):
        q_t, q_s = softmax(dt), softmax(ds)
        log_norm = math.log(sum(math.exp(v) for v in q_s))
        total += -sum(t * (s - log_norm) for t, s in zip(q_t, q_s))
    got = DMMLoss(codebook)(student, teacher)
    assert DMMLoss(codebook).kind == "official"
    assert got.item() == pytest.approx(total / 2, rel=1e-5)


def test_dmm_cross_entropy_matches_hand_computation():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    # two pixels (B=1, h=1, w=2), features [B, D=2, h, w]
    teacher = torch.tensor([[0.9, 0.1], [0.0, 1.9]]).t().reshape(1, 2, 1, 2)  # nearest codes 1, 2
    student = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).t().reshape(1, 2, 1, 2)
    # pixel 1: squared distances 0, 1, 4 -> target 1: 1 + log(1 + e^-1 + e^-4)
    # pixel 2: squared distances 2, 1, 2 -> target 2: 2 + log(e^-2 + e^-1 + e^-2)
    ce1 = 1 + math.log(1 + math.exp(-1) + math.exp(-4))
    ce2 = 2 + math.log(2 * math.exp(-2) + math.exp(-1))
    got = DMMLoss(codebook, kind="hard")(student, teacher)
    assert got.item() == pytest.approx((ce1 + ce2) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="codebook"):
        DMMLoss(codebook)(torch.rand(1, 3, 2, 2), torch.rand(1, 3, 2, 2))
    with pytest.raises(ValueError, match="codebook"):
        DMMLoss(torch.rand(4))


def test_kd_with_codebook_adds_the_dmm_term():
    codebook = torch.randn(5, 6)
    trainer, teacher, student = kd_trainer(codebook=codebook, lambda_c=0.0, lambda_aug=0.0)
    assert trainer.lambda_ce == pytest.approx(0.001 * 255)
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    loss, terms = trainer.compute_loss(lr, hr)
    s, t = student(lr), teacher(lr)
    enc = trainer.contrastive.encoder
    ce = DMMLoss(codebook)(enc(s)[-1], enc(t)[-1])
    torch.testing.assert_close(loss, 255 * F.l1_loss(s, hr) + 255 * F.l1_loss(s, t) + 0.001 * 255 * ce)
    assert set(terms) == {"loss", "l1_student", "l1_kd", "dmm"}


def test_kd_dmm_runs_on_the_dmm_encoder_when_given():
    codebook = torch.randn(7, 4)
    proj = nn.Conv2d(3, 4, 2, stride=2)  # stands for a VQGAN encoder + quant conv: [B,3,H,W] -> [B,4,H/2,W/2]
    trainer, teacher, student = kd_trainer(codebook=codebook, dmm_encoder=proj, lambda_c=0.0, lambda_aug=0.0)
    assert not any(p.requires_grad for p in proj.parameters())
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    loss, terms = trainer.compute_loss(lr, hr)
    s, t = student(lr), teacher(lr)
    ce = DMMLoss(codebook)(proj(s), proj(t))
    torch.testing.assert_close(loss, 255 * F.l1_loss(s, hr) + 255 * F.l1_loss(s, t) + 0.001 * 255 * ce)
    assert terms["dmm"] == pytest.approx(ce.item(), rel=1e-5)


def test_an_options_value_kdtrainer_would_override_is_refused():
    """KDTrainer's keyword defaults win over an ``options`` object, so a value set there and not
    passed as the keyword would be lost: refused by name; the same value as the keyword is fine."""
    from csd_fast import TrainOptions

    opts = TrainOptions(method="dckd", lambda_kd=2.0, lr=1e-3)
    with pytest.raises(ValueError, match=r"options: .*lambda_kd \(options: 2.0, argument: 1.0\)"):
        kd_trainer(options=opts)
    trainer, _, _ = kd_trainer(options=opts, lambda_kd=2.0)
    assert trainer.lambda_kd == 2.0 and trainer.options.lr == 1e-3
    assert kd_trainer(options=TrainOptions(lr=1e-3))[0].options.lr == 1e-3  # defaults left alone: no clash
