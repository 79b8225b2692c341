"""One CSD training step against the official PyTorch CSD step, restated here in float64.

The statement follows the official code (``trainer/slim_contrast_trainer.py``, ``model/edsr.py``,
``model/rcan.py``, ``model/carn.py``, ``model/common.py``, ``loss/contrast_loss.py``): the network
runs on [0, 255] images with its parameters as they are; a slim conv (``common.SlimModule``) takes
``weight[:int(out*r), :int(in*r)]`` of its full weight, the head keeps the 3 input colours, the tail
the 3 output colours, the upsampler ``weight[:4*int(r*C), :int(r*C)]`` (x3: ``9*int(r*C)``); the
L1 terms are on the 8-bit scale; the VGG19 gets the raw 8-bit outputs; negatives are
``lr[torch.randperm(neg_num)]`` (the batch's first K LR images, in random order), bicubic-upsampled,
the same for every anchor; CL_j = d(T, S) / (mean(sum_k |N_k - S|) + 1e-7); Adam(lr 1e-4, betas
0.9/0.999, eps 1e-8). Loss, gradients and the parameters after the step must match to round-off, for EDSR, RCAN (channel attention) and the
official CSD CARN (``carn-csd``: its 1x1 fusions sliced as one prefix of the concatenation).
The widths are picked where ``int()`` and ``round()`` give different channel counts.
"""
import warnings

import torch
import torch.nn.functional as F

from csd_fast.losses import ContrastiveLoss
from csd_fast.models import SlimCARNCSD, SlimEDSR, SlimRCAN
from csd_fast.trainer import CSDTrainer

MEAN = (0.4488, 0.4371, 0.4040)
K = 3
OFFICIAL_NAMES = {"upsampler.convs.0": "upsampler.blocks.0", "tail": "tail_conv"}


def _official_name(ours: str) -> str:
    module, _, kind = ours.rpartition(".")
    return f"{OFFICIAL_NAMES.get(module, module)}.{kind}"


def _mean255():
    return 255 * torch.tensor(MEAN).double().view(1, 3, 1, 1)  # MeanShift's bias is fp32 in the official code too


def slim_module(p: dict, name: str, x, width_mult: float):
    """``common.SlimModule``: ``weight[:int(out*r), :int(in*r)]``, ``bias[:int(out*r)]``, padding k // 2."""
    weight = p[name + ".weight"]
    out_ch, in_ch = int(weight.shape[0] * width_mult), int(weight.shape[1] * width_mult)
    return F.conv2d(x, weight[:out_ch, :in_ch], p[name + ".bias"][:out_ch], padding=weight.shape[-1] // 2)


def head_and_tail(p: dict, head: str, tail: str, width_mult: float):
    """The official head (all 3 input colours) and tail (all 3 output colours) at ``int(C*r)`` features."""
    nf = int(p[head + ".weight"].shape[0] * width_mult)
    first = lambda x: F.conv2d(x, p[head + ".weight"][:nf, :3], p[head + ".bias"][:nf], padding=1)
    last = lambda x: F.conv2d(x, p[tail + ".weight"][:3, :nf], p[tail + ".bias"][:3], padding=1)
    return first, last


def upsampler(p: dict, prefix: str, x, width_mult: float, scale: int):
    """``common.Upsampler``: x2/x4 one/two conv(:4*int(r*C)) + PixelShuffle(2), x3 conv(:9*int(r*C)) + PixelShuffle(3)."""
    nf = p[prefix + "0.weight"].shape[1]
    width = int(width_mult * nf)
    f = 3 if scale == 3 else 2
    for i in range({2: 1, 3: 1, 4: 2}[scale]):
        w, b = p[f"{prefix}{i}.weight"], p[f"{prefix}{i}.bias"]
        x = F.pixel_shuffle(F.conv2d(x, w[: f * f * width, :width], b[: f * f * width], padding=1), f)
    return x


def official_edsr(p: dict, x255, width_mult: float, scale: int, n_resblocks: int):
    """``EDSR.forward(x, width_mult)`` of the official code on 8-bit input, with plain convs (res_scale 0.1)."""
    w = int(p["head.weight"].shape[0] * width_mult)
    conv = lambda x, name, o, i: F.conv2d(x, p[name + ".weight"][:o, :i], p[name + ".bias"][:o], padding=1)
    x = conv(x255 - _mean255(), "head", w, 3)
    r = x
    for b in range(n_resblocks):
        r = r + 0.1 * conv(F.relu(conv(r, f"body.{b}.conv1", w, w)), f"body.{b}.conv2", w, w)
    r = conv(r, "body_conv", w, w) + x
    r = upsampler(p, "upsampler.blocks.", r, width_mult, scale)
    return conv(r, "tail_conv", 3, w) + _mean255()


def official_rcan(p: dict, x255, width_mult: float, scale: int, n_resgroups: int, n_resblocks: int):
    """``RCAN.forward(x, width_mult)`` of the official code (``model/rcan.py``) on 8-bit input.

    RCAB: ``x + CA(conv2(relu(conv1(x))))``, CA(t) = ``t * sigmoid(up(relu(down(avgpool(t)))))``, each conv a
    ``SlimModule`` (the 1x1 CA convs too: ``int((C // reduction) * r)`` squeezed channels). Residual group:
    RCABs, a conv, plus the group input; body: groups, ``body_conv``, plus the head output.
    Parameter names are this package's (``groups.g.blocks.b.ca.down`` is the official ``body.g.body.b.caLayer.conv_du.0``).
    """
    head, tail = head_and_tail(p, "head", "tail", width_mult)
    x = head(x255 - _mean255())
    res = x
    for g in range(n_resgroups):
        group_in = res
        for b in range(n_resblocks):
            pre = f"groups.{g}.blocks.{b}."
            t = slim_module(p, pre + "conv2", F.relu(slim_module(p, pre + "conv1", res, width_mult)), width_mult)
            y = F.adaptive_avg_pool2d(t, 1)
            y = torch.sigmoid(slim_module(p, pre + "ca.up", F.relu(slim_module(p, pre + "ca.down", y, width_mult)), width_mult))
            res = t * y + res
        res = slim_module(p, f"groups.{g}.conv", res, width_mult) + group_in
    res = slim_module(p, "body_conv", res, width_mult) + x
    return tail(upsampler(p, "upsampler.convs.", res, width_mult, scale)) + _mean255()


def official_carn(p: dict, x255, width_mult: float, scale: int):
    """``CARN.forward(x, width_mult)`` of the official CSD code (``model/carn.py``) on 8-bit input.

    ``common.ResidualBlock`` (res_scale 1): ``x + conv2(relu(conv1(x)))``, no ReLU after the add;
    ``BasicBlock`` fusion: ``relu(SlimModule(cat))``, i.e. the first ``int(k*C*r)`` channels of the
    k*C-channel concatenation; a Block cascades 3 units, the network 3 Blocks, the same way; the
    upsampler has no ReLU. Parameter names are this package's (``body.units.i`` is the official
    ``b{i+1}``, ``body.fuse.i`` ``c{i+1}.conv``, ``units.j.conv1`` ``b{j+1}.conv1``).
    """

    def cascade(prefix: str, x, unit):
        c = o = x
        for i in range(3):
            c = torch.cat([c, unit(f"{prefix}units.{i}.", o)], dim=1)
            o = F.relu(slim_module(p, f"{prefix}fuse.{i}", c, width_mult))
        return o

    def residual_block(prefix: str, x):
        return x + slim_module(p, prefix + "conv2", F.relu(slim_module(p, prefix + "conv1", x, width_mult)), width_mult)

    head, tail = head_and_tail(p, "head", "tail", width_mult)
    x = head(x255 - _mean255())
    o = cascade("body.", x, lambda prefix, y: cascade(prefix, y, residual_block))
    return tail(upsampler(p, "upsampler.convs.", o, width_mult, scale)) + _mean255()


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


def _perturbed(make):
    """``make()`` with random float64 parameters on the official scale (biases of 8-bit magnitude), seeded."""
    torch.manual_seed(0)
    model = make().double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (5.0 if name.endswith("bias") else 0.02))
    return model


def check_one_official_step(model, official_forward, width: float, lr_side: int, official_name=lambda n: n):
    """``CSDTrainer.train_step`` vs the official step ``official_forward(params, lr255, width_mult)``:
    loss and CL to 1e-10, every gradient and every parameter after Adam to round-off."""
    scale = model.scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        contrastive = ContrastiveLoss().double()
    trainer = CSDTrainer(model, width=width, neg_num=K, contrastive=contrastive, progress=False)
    official = {official_name(k): v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    torch.manual_seed(1)
    lr = torch.rand(6, 3, lr_side, lr_side, dtype=torch.float64)  # K = 3 of 6: the first 3 are not a random 3
    hr = torch.rand(6, 3, scale * lr_side, scale * lr_side, dtype=torch.float64)

    # the official step
    lr255, hr255 = lr * 255, hr * 255
    teacher, student = official_forward(official, lr255, 1.0), official_forward(official, lr255, width)
    perm = torch.randperm(K, generator=trainer.step_generator(1))  # lr[torch.randperm(neg_num)]: the first K, shared
    neg = F.interpolate(lr255[perm], scale_factor=scale, mode="bicubic", align_corners=False)
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
        n = official_name(ours)
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-9, atol=1e-12 * grads[n].abs().max().item(), msg=ours)
        torch.testing.assert_close(p.detach(), expected_after[n], rtol=1e-12, atol=1e-13, msg=ours)
        assert (p.detach() - official[n].detach()).abs().max() > 0 or grads[n].abs().max() == 0


def test_edsr_step_equals_the_official_step_in_float64():
    model = _perturbed(lambda: SlimEDSR(scale=2, n_feats=32, n_resblocks=1, res_scale=0.1))
    assert model.export(0.3).config["n_feats"] == 9  # the slimming rule: int(0.3 * 32) = 9, round() would give 10
    check_one_official_step(model, lambda p, x, r: official_edsr(p, x, r, 2, 1), 0.3, 8, _official_name)


def test_rcan_step_equals_the_official_step_in_float64():
    # 32 feats, reduction 6 -> 5 CA channels; width 0.3: int() gives 9 and 1 channels, round() 10 and 2
    model = _perturbed(lambda: SlimRCAN(scale=4, n_feats=32, n_resgroups=2, n_resblocks=2, reduction=6))
    assert model.config["ca_channels"] == 32 // 6
    compact = model.export(0.3).config
    assert (compact["n_feats"], compact["ca_channels"]) == (9, 1)
    check_one_official_step(model, lambda p, x, r: official_rcan(p, x, r, 4, 2, 2), 0.3, 4)


def test_official_csd_carn_step_equals_the_official_step_in_float64():
    # 16 feats at width 0.26: int(4.16) = 4 channels, fusions take int(0.26 * k * 16) = 8, 12, 16 (= k * 4)
    # inputs: one prefix of the concatenation, which differs from slicing each of its 16-channel parts
    model = _perturbed(lambda: SlimCARNCSD(scale=3, n_feats=16))
    assert model.export(0.26).config["n_feats"] == 4
    check_one_official_step(model, lambda p, x, r: official_carn(p, x, r, 3), 0.26, 6)
