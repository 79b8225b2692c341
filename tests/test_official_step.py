"""One CSD training step against the official PyTorch CSD step, restated here in float64.

The statement follows the official code (``trainer/slim_contrast_trainer.py``, ``model/edsr.py``,
``model/common.py``, ``loss/contrast_loss.py``): the network runs on [0, 255] images with its
parameters as they are; a slim conv takes ``weight[:int(r*out), :int(r*in)]``; the L1 terms are
on the 8-bit scale; the VGG19 gets the raw 8-bit outputs; negatives are K LR images of the batch in
``randperm`` order, bicubic-upsampled, the same for every anchor; CL_j = d(T, S) /
(mean(sum_k |N_k - S|) + 1e-7); Adam(lr 1e-4, betas 0.9/0.999, eps 1e-8). Loss, gradients and the
parameters after the step must match to round-off.
"""
import warnings

import torch
import torch.nn.functional as F

from csd_fast.losses import ContrastiveLoss
from csd_fast.models import SlimEDSR
from csd_fast.trainer import CSDTrainer

MEAN = (0.4488, 0.4371, 0.4040)
N_FEATS, WIDTH, K, SCALE = 32, 0.3, 3, 2  # int(0.3 * 32) = 9, round() would give 10
OFFICIAL_NAMES = {"upsampler.convs.0": "upsampler.blocks.0", "tail": "tail_conv"}


def _official_name(ours: str) -> str:
    module, _, kind = ours.rpartition(".")
    return f"{OFFICIAL_NAMES.get(module, module)}.{kind}"


def official_edsr(p: dict, x255, width_mult: float):
    """``EDSR.forward(x, width_mult)`` of the official code on 8-bit input, with plain convs."""
    conv = lambda x, name, o, i: F.conv2d(x, p[name + ".weight"][:o, :i], p[name + ".bias"][:o], padding=1)
    w = int(N_FEATS * width_mult)
    mean = torch.tensor(MEAN).double().view(1, 3, 1, 1)  # MeanShift's bias is fp32 in the official code too
    x = conv(x255 - 255 * mean, "head", w, 3)
    r = x + 0.1 * conv(F.relu(conv(x, "body.0.conv1", w, w)), "body.0.conv2", w, w)
    r = conv(r, "body_conv", w, w) + x
    r = F.pixel_shuffle(conv(r, "upsampler.blocks.0", 4 * w, w), 2)
    return conv(r, "tail_conv", 3, w) + 255 * mean


def official_contrast(vgg_features, teacher, student, neg, weights=(1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)):
    """``ContrastLoss.L1_forward`` with ``t_detach``: VGG19 slices [0:2], [2:7], [7:12], [12:21], [21:30]."""

    def vgg(x):
        out = []
        for a, b in ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30)):
            x = vgg_features[a:b](x)
            out.append(x)
        return out

    loss = 0
    for w, t, s, n in zip(weights, vgg(teacher), vgg(student), vgg(neg)):
        n = n.unsqueeze(0).repeat(s.shape[0], 1, 1, 1, 1).permute(1, 0, 2, 3, 4)
        d_ts = (t.detach() - s).abs().mean()
        d_sn = torch.mean(torch.abs(n.detach() - s).sum(0))
        loss = loss + w * d_ts / (d_sn + 1e-7)
    return loss


def test_one_step_equals_the_official_step_in_float64():
    torch.manual_seed(0)
    model = SlimEDSR(scale=SCALE, n_feats=N_FEATS, n_resblocks=1, res_scale=0.1).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (5.0 if name.endswith("bias") else 0.02))  # 8-bit-scale biases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        contrastive = ContrastiveLoss().double()
    trainer = CSDTrainer(model, width=WIDTH, neg_num=K, contrastive=contrastive, progress=False)
    assert model.export(WIDTH).config["n_feats"] == 9  # the slimming rule: int(), not round()

    official = {_official_name(k): v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    lr = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    hr = torch.rand(4, 3, 16, 16, dtype=torch.float64)

    # the official step
    lr255, hr255 = lr * 255, hr * 255
    teacher, student = official_edsr(official, lr255, 1.0), official_edsr(official, lr255, WIDTH)
    perm = torch.randperm(lr.shape[0], generator=trainer.step_generator(1))[:K]  # K of the batch, shared
    neg = F.interpolate(lr255[perm], scale_factor=SCALE, mode="bicubic", align_corners=False)
    cl = official_contrast(contrastive.encoder.features, teacher, student, neg)
    loss = F.l1_loss(hr255, student) + 200.0 * cl + 1.0 * F.l1_loss(hr255, teacher)
    names = list(official)
    grads = dict(zip(names, torch.autograd.grad(loss, [official[n] for n in names])))
    expected_after = {}
    for n in names:  # Adam's first step, bias-corrected
        g = grads[n]
        m_hat, v_hat = (0.1 * g) / (1 - 0.9), (0.001 * g * g) / (1 - 0.999)
        expected_after[n] = official[n].detach() - 1e-4 * m_hat / (v_hat.sqrt() + 1e-8)

    terms = trainer.train_step(lr, hr)
    assert abs(terms["loss"] - loss.item()) <= 1e-10 * abs(loss.item())
    assert abs(terms["contrastive"] - cl.item()) <= 1e-10 * abs(cl.item())
    for ours, p in model.named_parameters():
        n = _official_name(ours)
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-9, atol=1e-12 * grads[n].abs().max().item(), msg=ours)
        torch.testing.assert_close(p.detach(), expected_after[n], rtol=1e-12, atol=1e-13, msg=ours)
        assert (p.detach() - official[n].detach()).abs().max() > 0 or grads[n].abs().max() == 0
