"""Foreign checkpoints: fake state dicts with the real key names of each code base, built by hand from
our own model's weights, must load back to the same function. Our parameters are in the official
8-bit units: EDSR-PyTorch / official CSD / BasicSR tensors are copied as they are; a network trained
on [0, 1] (original CARN) has every bias / 255 and RCAN's attention up-conv weight x 255."""
import re
import warnings

import pytest
import torch
import torch.nn.functional as F

from csd_fast.convert import canonicalize, detect_format, load_teacher, load_teacher_state
from csd_fast.cli import main
from csd_fast.data import bundled_images, save_image
from csd_fast.models import SlimCARN, build_model

MEAN = (0.45, 0.43, 0.41)


def _randomized(model):
    with torch.no_grad():  # non-trivial biases, so range scaling mistakes show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _in_range(key, v, rng):
    """A tensor of ours (8-bit units) as a network trained on pixel range ``rng`` holds it."""
    f = rng / 255.0
    if key.endswith(".ca.up.weight"):
        return v / f
    if key.endswith("bias") and ".ca.up." not in key:
        return v * f
    return v.clone()


def _shift(prefix, mean, rng):
    return {f"{prefix}.weight": torch.eye(3).view(3, 3, 1, 1), f"{prefix}.bias": torch.tensor(mean) * rng}


def _subs(*rules):
    """``key -> key`` through each ``(pattern, replacement)`` of ``rules`` in order (``re.sub``)."""
    def rename(k):
        for pattern, repl in rules:
            k = re.sub(pattern, repl, k)
        return k
    return rename


def mean_shift_state(m, rng, rename):
    """A code base with 1x1 mean-shift convs (``sub_mean``/``add_mean``, bias = -/+ range * mean): every
    tensor of ``m`` but its mean, under ``rename(key)`` and on the ``rng`` pixel range."""
    out = {**_shift("sub_mean", [-v for v in m.config["rgb_mean"]], rng), **_shift("add_mean", m.config["rgb_mean"], rng)}
    out.update({rename(k): _in_range(k, v, rng) for k, v in m.state_dict().items() if k != "mean_shift.mean"})
    return out


def edsr_pytorch_state(m, rng=255.0):
    """EDSR-PyTorch names: head.0, body.N.body.0/2, body.<n>, tail.0.<2k>, tail.1, sub_mean/add_mean."""
    return mean_shift_state(m, rng, _subs(
        (r"^head\.", "head.0."), (r"^body\.(\d+)\.conv1\.", r"body.\1.body.0."), (r"^body\.(\d+)\.conv2\.", r"body.\1.body.2."),
        (r"^body_conv\.", f"body.{m.config['n_resblocks']}."),
        (r"^upsampler\.convs\.(\d)\.", lambda mm: f"tail.0.{2 * int(mm[1])}."), (r"^tail\.(weight|bias)", r"tail.1.\1")))


def csd_official_state(m, rng=255.0):
    """Official CSD EDSR: head, body.N.conv1/2, body_conv, upsampler.blocks.K, tail_conv, saved from DataParallel."""
    rename = _subs((r"^upsampler\.convs\.", "upsampler.blocks."), (r"^tail\.", "tail_conv."), (r"^", "module."))
    return mean_shift_state(m, rng, rename)


def official_trainer_file(module_state):
    """What the official CSD trainer's ``torch.save`` writes (slim_contrast_trainer.py)."""
    return {"epoch": 7, "model_state_dict": module_state,
            "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0, 1]}]},
            "best_psnr": 31.25, "best_psnr_epoch": 5}


def rcan_original_state(m, rng=255.0):
    """yulunzhang/RCAN (model/rcan.py): head.0, body.G.body.B.body.{0,2} (RCAB convs), body.G.body.B.body.3.conv_du.{0,2}
    (attention), body.G.body.<n_resblocks> (group conv), body.<n_resgroups>, tail.0.<2k>, tail.1, sub_mean/add_mean."""
    g, b = m.config["n_resgroups"], m.config["n_resblocks"]
    return mean_shift_state(m, rng, _subs(
        (r"^groups\.(\d+)\.blocks\.(\d+)\.", r"body.\1.body.\2."), (r"\.conv1\.", ".body.0."), (r"\.conv2\.", ".body.2."),
        (r"\.ca\.down\.", ".body.3.conv_du.0."), (r"\.ca\.up\.", ".body.3.conv_du.2."),
        (r"^groups\.(\d+)\.conv\.", rf"body.\1.body.{b}."), (r"^head\.", "head.0."), (r"^body_conv\.", f"body.{g}."),
        (r"^upsampler\.convs\.(\d)\.", lambda mm: f"tail.0.{2 * int(mm[1])}."), (r"^tail\.(weight|bias)", r"tail.1.\1")))


def csd_official_rcan_state(m, rng=255.0):
    """Official CSD RCAN (model/rcan.py) in its trainer's file: head_conv, body.G.body.B.body.{0,1},
    body.G.body.B.caLayer.conv_du.{0,1}, body.G.conv, body_conv, upsampler.blocks.K, tail_conv, module. prefix."""
    rename = _subs(
        (r"^groups\.(\d+)\.blocks\.(\d+)\.", r"body.\1.body.\2."), (r"\.conv1\.", ".body.0."), (r"\.conv2\.", ".body.1."),
        (r"\.ca\.down\.", ".caLayer.conv_du.0."), (r"\.ca\.up\.", ".caLayer.conv_du.1."),
        (r"^groups\.(\d+)\.conv\.", r"body.\1.conv."), (r"^head\.", "head_conv."),
        (r"^upsampler\.convs\.", "upsampler.blocks."), (r"^tail\.", "tail_conv."))
    return official_trainer_file({"module." + k: v for k, v in mean_shift_state(m, rng, rename).items()})


def csd_official_carn_state(m, rng=255.0):
    """Official CSD CARN (model/carn.py) in its trainer's file: entry, bI.bJ.conv1/2, bI.cJ.conv, cJ.conv,
    upsample.blocks.K, exit, sub_mean/add_mean, module. prefix."""
    rename = _subs(
        (r"^head\.", "entry."), (r"^tail\.", "exit."),
        (r"^body\.units\.(\d)\.units\.(\d)\.", lambda mm: f"b{int(mm[1]) + 1}.b{int(mm[2]) + 1}."),
        (r"^body\.units\.(\d)\.fuse\.(\d)\.", lambda mm: f"b{int(mm[1]) + 1}.c{int(mm[2]) + 1}.conv."),
        (r"^body\.fuse\.(\d)\.", lambda mm: f"c{int(mm[1]) + 1}.conv."), (r"^upsampler\.convs\.", "upsample.blocks."))
    return official_trainer_file({"module." + k: v for k, v in mean_shift_state(m, rng, rename).items()})


def basicsr_edsr_state(m):
    out = {}
    for k, v in m.state_dict().items():
        if k == "mean_shift.mean":
            continue
        k = re.sub(r"^head\.", "conv_first.", k)
        k = re.sub(r"^body_conv\.", "conv_after_body.", k)
        k = re.sub(r"^upsampler\.convs\.(\d)\.", lambda mm: f"upsample.{2 * int(mm[1])}.", k)
        k = re.sub(r"^tail\.", "conv_last.", k)
        out[k] = v.clone()
    return {"params": out}


def basicsr_rcan_state(m):
    out = {}
    for k, v in m.state_dict().items():
        if k == "mean_shift.mean":
            continue
        k = re.sub(r"^groups\.(\d+)\.blocks\.(\d+)\.", r"body.\1.residual_group.\2.", k)
        k = k.replace(".conv1.", ".rcab.0.").replace(".conv2.", ".rcab.2.")
        k = k.replace(".ca.down.", ".rcab.3.attention.1.").replace(".ca.up.", ".rcab.3.attention.3.")
        k = re.sub(r"^groups\.(\d+)\.conv\.", r"body.\1.conv.", k)
        k = re.sub(r"^head\.", "conv_first.", k)
        k = re.sub(r"^body_conv\.", "conv_after_body.", k)
        k = re.sub(r"^upsampler\.convs\.(\d)\.", lambda mm: f"upsample.{2 * int(mm[1])}.", k)
        k = re.sub(r"^tail\.", "conv_last.", k)
        out[k] = v.clone()
    return {"params_ema": out, "params": {}}


def carn_official_state(m, multi_scale=False):
    """nmhkahn/CARN-pytorch: entry, bI.bJ.body.0/2, bI.cJ.body.0, cJ.body.0, upsample.up[s].body.<3k>, exit."""
    s = m.config["scale"]
    up = f"upsample.up{s}.body." if multi_scale else "upsample.up.body."
    out = {**_shift("sub_mean.shifter", [-v for v in m.config["rgb_mean"]], 1.0),
           **_shift("add_mean.shifter", m.config["rgb_mean"], 1.0)}
    for k, v in m.state_dict().items():
        if k == "mean_shift.mean":
            continue
        v = _in_range(k, v, 1.0)
        k = re.sub(r"^head\.", "entry.", k)
        k = re.sub(r"^tail\.", "exit.", k)
        k = re.sub(r"^body\.units\.(\d)\.units\.(\d)\.conv1\.", lambda mm: f"b{int(mm[1]) + 1}.b{int(mm[2]) + 1}.body.0.", k)
        k = re.sub(r"^body\.units\.(\d)\.units\.(\d)\.conv2\.", lambda mm: f"b{int(mm[1]) + 1}.b{int(mm[2]) + 1}.body.2.", k)
        k = re.sub(r"^body\.units\.(\d)\.fuse\.(\d)\.", lambda mm: f"b{int(mm[1]) + 1}.c{int(mm[2]) + 1}.body.0.", k)
        k = re.sub(r"^body\.fuse\.(\d)\.", lambda mm: f"c{int(mm[1]) + 1}.body.0.", k)
        k = re.sub(r"^upsampler\.convs\.(\d)\.", lambda mm: f"{up}{3 * int(mm[1])}.", k)
        out[k] = v
    if multi_scale:  # the other scales' upsamplers, ignored on load
        out["upsample.up3.body.0.weight"] = torch.zeros(9 * m.config["n_feats"], m.config["n_feats"], 3, 3)
        out["upsample.up3.body.0.bias"] = torch.zeros(9 * m.config["n_feats"])
    return out


CASES = {
    "edsr-pytorch": (lambda: build_model("edsr", 4, preset=None, n_feats=8, n_resblocks=3, res_scale=1.0, rgb_mean=MEAN),
                     edsr_pytorch_state, ["head.0.weight", "body.2.body.2.bias", "body.3.weight", "tail.0.2.weight", "tail.1.bias", "sub_mean.bias"]),
    # res_scale 0.1: the official CSD default, guessed for its files whatever the width
    "csd-official": (lambda: build_model("edsr", 3, preset=None, n_feats=8, n_resblocks=2, res_scale=0.1, rgb_mean=MEAN),
                     csd_official_state, ["module.head.weight", "module.body.1.conv2.weight", "module.body_conv.bias",
                                          "module.upsampler.blocks.0.weight", "module.tail_conv.weight"]),
    "basicsr-edsr": (lambda: build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=2, res_scale=1.0),
                     basicsr_edsr_state, ["conv_first.weight", "body.1.conv1.weight", "conv_after_body.bias", "upsample.0.weight", "conv_last.bias"]),
    "basicsr-rcan": (lambda: build_model("rcan", 4, preset=None, n_feats=8, n_resgroups=2, n_resblocks=2, reduction=4),
                     basicsr_rcan_state, ["conv_first.weight", "body.1.residual_group.1.rcab.0.weight", "body.0.residual_group.0.rcab.3.attention.1.weight",
                                          "body.0.residual_group.1.rcab.3.attention.3.bias", "body.1.conv.weight", "upsample.2.weight", "conv_last.weight"]),
    "carn-official": (lambda: build_model("carn", 2, preset=None, n_feats=8, rgb_mean=MEAN), carn_official_state,
                      ["entry.weight", "b1.b1.body.0.weight", "b3.b3.body.2.bias", "b2.c3.body.0.weight", "c1.body.0.weight", "upsample.up.body.0.weight", "exit.bias"]),
    "rcan-original": (lambda: build_model("rcan", 4, preset=None, n_feats=8, n_resgroups=2, n_resblocks=2, reduction=4, rgb_mean=MEAN),
                      rcan_original_state, ["head.0.weight", "body.1.body.1.body.0.weight", "body.0.body.1.body.2.bias",
                                            "body.1.body.0.body.3.conv_du.0.weight", "body.0.body.0.body.3.conv_du.2.bias",
                                            "body.1.body.2.weight", "body.2.bias", "tail.0.2.weight", "tail.1.weight"]),
    "csd-official-rcan": (lambda: build_model("rcan", 2, preset=None, n_feats=8, n_resgroups=2, n_resblocks=2, reduction=4, rgb_mean=MEAN),
                          csd_official_rcan_state, ["module.head_conv.weight", "module.body.1.body.1.body.1.bias",
                                                    "module.body.0.body.1.caLayer.conv_du.0.weight", "module.body.1.body.0.caLayer.conv_du.1.bias",
                                                    "module.body.1.conv.weight", "module.body_conv.bias", "module.upsampler.blocks.0.weight",
                                                    "module.tail_conv.weight", "module.add_mean.bias"]),
    "csd-official-carn": (lambda: build_model("carn-csd", 4, preset=None, n_feats=8, rgb_mean=MEAN), csd_official_carn_state,
                          ["module.entry.weight", "module.b1.b1.conv1.weight", "module.b3.b3.conv2.bias", "module.b2.c3.conv.weight",
                           "module.c1.conv.weight", "module.upsample.blocks.1.weight", "module.exit.bias", "module.sub_mean.bias"]),
}


def _flat(state):
    return canonicalize(state)


@pytest.mark.parametrize("fmt", sorted(CASES))
@torch.no_grad()
def test_foreign_state_loads_to_identical_outputs(fmt, tmp_path):
    make, to_foreign, real_keys = CASES[fmt]
    ours = _randomized(make())
    foreign = to_foreign(ours)
    flat = next((foreign[k] for k in ("params_ema", "model_state_dict") if k in foreign), foreign.get("params", foreign))
    assert set(real_keys) <= set(flat), "the fake state dict must carry the real code base's key names"
    assert detect_format(_flat(foreign)) == fmt
    path = tmp_path / "foreign.pth"
    torch.save(foreign, path)
    model, got_fmt = load_teacher(path)
    assert got_fmt == fmt and model.arch == ours.arch
    for key in ("scale", "n_feats"):
        assert model.config[key] == ours.config[key]
    x = torch.rand(1, 3, 11, 9)
    torch.testing.assert_close(model.eval()(x), ours(x), atol=2e-5, rtol=1e-4)


def test_inferred_hyperparameters():
    ours = build_model("rcan", 4, preset=None, n_feats=16, n_resgroups=3, n_resblocks=2, reduction=4)
    arch, config, _, _ = load_teacher_state(basicsr_rcan_state(ours))
    assert arch == "rcan"
    assert {k: config[k] for k in ("scale", "n_feats", "n_resgroups", "n_resblocks", "ca_channels")} == \
        dict(scale=4, n_feats=16, n_resgroups=3, n_resblocks=2, ca_channels=4)
    big = build_model("edsr", 2, preset=None, n_feats=256, n_resblocks=1)
    assert load_teacher_state(edsr_pytorch_state(big))[1]["res_scale"] == 0.1  # EDSR paper's large model
    assert load_teacher_state(edsr_pytorch_state(big), res_scale=1.0)[1]["res_scale"] == 1.0


@torch.no_grad()
def test_multiscale_carn_needs_scale():
    ours = _randomized(build_model("carn", 2, preset=None, n_feats=8, rgb_mean=MEAN))
    foreign = carn_official_state(ours, multi_scale=True)
    with pytest.raises(ValueError, match="scale: this CARN checkpoint is multi-scale"):
        load_teacher(foreign)
    model, _ = load_teacher(foreign, scale=2)
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(model.eval()(x), ours(x), atol=2e-5, rtol=1e-4)


def test_mismatches_are_named():
    ours = build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=2)
    foreign = edsr_pytorch_state(ours)
    del foreign["body.1.body.2.bias"]
    foreign["body.0.extra.weight"] = torch.zeros(1)
    foreign["tail.1.weight"] = torch.zeros(3, 9, 3, 3)
    with pytest.raises(ValueError) as err:
        load_teacher_state(foreign, source="x.pt")
    msg = str(err.value)
    assert "x.pt" in msg and "missing keys: body.1.body.2.bias" in msg
    assert "unexpected keys: body.0.extra.weight" in msg
    assert "shape mismatches: tail.1.weight (3, 9, 3, 3) (expected (3, 8, 3, 3))" in msg


def test_unknown_and_wrapped_inputs():
    with pytest.raises(ValueError, match="unrecognized architecture"):
        load_teacher_state({"conv.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="found no tensors"):
        canonicalize({"epoch": 3, "optimizer": {}})
    sd = canonicalize({"state_dict": {"module.module.a": torch.zeros(1)}})
    assert list(sd) == ["a"]


def test_scale_hint_must_agree():
    foreign = edsr_pytorch_state(build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=1))
    with pytest.raises(ValueError, match="scale: .* is a x2"):
        load_teacher_state(foreign, scale=4)


@torch.no_grad()
def test_official_parameters_load_unchanged():
    """Official CSD / EDSR-PyTorch tensors are our parameters as they are (both run on the 8-bit scale):
    a hand-built state dict loads bit for bit, and the model equals the official forward on 255-scale
    images: ``f_official(255 x) / 255``, written here with plain convs."""
    gen = torch.Generator().manual_seed(0)
    c, scale = 4, 2
    t = lambda *shape: torch.randn(*shape, generator=gen) * 0.1
    official = {
        "module.head.weight": t(c, 3, 3, 3), "module.head.bias": t(c),
        "module.body.0.conv1.weight": t(c, c, 3, 3), "module.body.0.conv1.bias": t(c) * 50,
        "module.body.0.conv2.weight": t(c, c, 3, 3), "module.body.0.conv2.bias": t(c) * 50,
        "module.body_conv.weight": t(c, c, 3, 3), "module.body_conv.bias": t(c) * 50,
        "module.upsampler.blocks.0.weight": t(4 * c, c, 3, 3), "module.upsampler.blocks.0.bias": t(4 * c) * 50,
        "module.tail_conv.weight": t(3, c, 3, 3), "module.tail_conv.bias": t(3) * 50,
        **_shift("module.sub_mean", [-v for v in MEAN], 255.0), **_shift("module.add_mean", MEAN, 255.0),
    }
    model, fmt = load_teacher(official, res_scale=0.1)
    assert fmt == "csd-official"
    mine = model.state_dict()
    for ours, theirs in [("head.weight", "head.weight"), ("body.0.conv1.bias", "body.0.conv1.bias"),
                         ("body_conv.bias", "body_conv.bias"), ("upsampler.convs.0.bias", "upsampler.blocks.0.bias"),
                         ("tail.weight", "tail_conv.weight"), ("tail.bias", "tail_conv.bias")]:
        assert torch.equal(mine[ours], official["module." + theirs]), ours
    conv = lambda x, name: torch.nn.functional.conv2d(x, official[f"module.{name}.weight"], official[f"module.{name}.bias"], padding=1)
    x = torch.rand(1, 3, 7, 6, generator=gen)
    x255 = x * 255 - torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    h = conv(x255, "head")
    r = h + 0.1 * conv(torch.relu(conv(h, "body.0.conv1")), "body.0.conv2")
    r = conv(r, "body_conv") + h
    y = conv(torch.nn.functional.pixel_shuffle(conv(r, "upsampler.blocks.0"), scale), "tail_conv")
    y = y + torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    torch.testing.assert_close(model.eval()(x), y / 255, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rng", [1.0, 255.0])
@torch.no_grad()
def test_edsr_pytorch_of_either_range_gives_the_same_function(rng):
    ours = _randomized(build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=2, res_scale=1.0, rgb_mean=MEAN))
    model, _ = load_teacher(edsr_pytorch_state(ours, rng=rng), rgb_range=rng)
    x = torch.rand(1, 3, 9, 8)
    torch.testing.assert_close(model.eval()(x), ours(x), atol=2e-5, rtol=1e-4)


def test_guessed_hyperparameters_are_warned_and_official_csd_res_scale_is_0_1():
    small = build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=1)
    with pytest.warns(UserWarning) as record:
        arch, config, _, fmt = load_teacher_state(csd_official_state(small), source="csd.pt")
    assert fmt == "csd-official" and config["res_scale"] == 0.1  # whatever the width
    msg = str(record[0].message)
    assert "csd.pt" in msg and "res_scale=0.1" in msg and "rgb_range=255" in msg
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing guessed: no warning
        assert load_teacher_state(csd_official_state(small), res_scale=1.0, rgb_range=255)[1]["res_scale"] == 1.0
    with pytest.warns(UserWarning, match=r"rgb_mean=\(0.4488.*img_range=255"):
        load_teacher_state(basicsr_edsr_state(small), res_scale=1.0)
    with pytest.warns(UserWarning, match=r"rgb_range=255 .*res_scale=1 "):
        load_teacher_state(edsr_pytorch_state(small))


def _official_csd_carn_forward(sd, x, w, rng=255.0):
    """The official CSD CARN forward (PyTorch version/model/carn.py + model/common.py), restated on
    its state dict: [0, 255] images, every conv sliced to ``int(channels * w)`` outputs and inputs
    (the 1x1 fusions: a prefix of the concatenation), no ReLU after the residual add, none in the
    upsampler (``weight[:4 * int(w * C), :int(w * C)]`` per x2 stage)."""
    sd = canonicalize(sd)

    def conv(t, key, keep_in=False, keep_out=False):
        weight, bias = sd[key + ".weight"], sd[key + ".bias"]
        o = weight.shape[0] if keep_out else int(weight.shape[0] * w)
        i = weight.shape[1] if keep_in else int(weight.shape[1] * w)
        return F.conv2d(t, weight[:o, :i], bias[:o], padding=weight.shape[-1] // 2)

    def residual(t, p):
        return t + conv(torch.relu(conv(t, p + ".conv1")), p + ".conv2")

    def cascade(t, p, unit):
        cat, out = t, t
        for i in (1, 2, 3):
            cat = torch.cat([cat, unit(out, f"{p}b{i}")], 1)
            out = torch.relu(conv(cat, f"{p}c{i}.conv"))
        return out

    x = F.conv2d(x * rng, sd["sub_mean.weight"], sd["sub_mean.bias"])
    h = conv(x, "entry", keep_in=True)
    h = cascade(h, "", lambda t, p: cascade(t, p + ".", residual))
    c = int(w * sd["entry.weight"].shape[0])
    k = 0
    while f"upsample.blocks.{k}.weight" in sd:
        weight, bias = sd[f"upsample.blocks.{k}.weight"], sd[f"upsample.blocks.{k}.bias"]
        h = F.pixel_shuffle(F.conv2d(h, weight[:4 * c, :c], bias[:4 * c], padding=1), 2)
        k += 1
    out = conv(h, "exit", keep_out=True)
    return F.conv2d(out, sd["add_mean.weight"], sd["add_mean.bias"]) / rng


@torch.no_grad()
def test_carn_csd_variant_reproduces_the_official_csd_carn():
    torch.manual_seed(3)
    source = _randomized(build_model("carn-csd", 4, preset=None, n_feats=8, rgb_mean=MEAN))
    official = csd_official_carn_state(source)
    model, fmt = load_teacher(official)
    assert fmt == "csd-official-carn" and model.arch == "carn-csd"
    x = torch.rand(2, 3, 7, 6)
    for w in (1.0, 0.5, 0.25):
        torch.testing.assert_close(model(x, w), _official_csd_carn_forward(official, x, w), atol=2e-5, rtol=1e-4)
    corrected = SlimCARN(scale=4, n_feats=8, rgb_mean=MEAN)
    corrected.load_state_dict(model.state_dict())  # same weights, the corrected variant's function
    assert not torch.allclose(corrected(x), model(x), atol=1e-3)
    student = model.export(0.5)
    assert student.arch == "carn-csd" and student.config["n_feats"] == 4
    torch.testing.assert_close(student(x), model(x, 0.5), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="width: 0.3 slices the official CSD CARN"):  # int(0.3 * 16) = 4 != 2 * int(0.3 * 8)
        model(x, 0.3)


def test_official_trainer_file_loads_through_load_teacher_and_the_cli(tmp_path, capsys):
    source = _randomized(build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=2, res_scale=0.1))
    path = tmp_path / "edsr_x2_csd.pth"
    torch.save(official_trainer_file(csd_official_state(source)), path)
    with pytest.warns(UserWarning, match="res_scale=0.1"):
        model, fmt = load_teacher(path)
    x = torch.rand(1, 3, 9, 8)
    assert fmt == "csd-official"
    torch.testing.assert_close(model.eval()(x), source(x), atol=2e-5, rtol=1e-4)
    data = tmp_path / "val"
    for name, img in bundled_images("test", max_side=32)[:2]:
        save_image(img, data / f"{name}.png")
    with pytest.warns(UserWarning, match="res_scale=0.1"):
        assert main(["eval", "--model", str(path), "--data", str(data), "--out", str(tmp_path / "ev")]) == 0
    assert "teacher" in capsys.readouterr().out
