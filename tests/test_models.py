"""Slim models: slicing rule, export equivalence, paper sizes, registry, bad input."""
import pytest
import torch
import torch.nn.functional as F

from csd_fast.models import SlimCARN, SlimConv2d, SlimEDSR, SlimRCAN, build_model, model_from_config

ARCHS = ["edsr", "rcan", "carn"]


def conv_params(cin, cout, k=3):
    return cin * cout * k * k + cout


def test_edsr_paper_sizes_counted_by_hand():
    # head + 32 blocks x 2 convs + body conv + 2 upsampler stages (C -> 4C) + tail, at C = 256 and 64.
    def edsr_x4(c):
        return (conv_params(3, c) + 64 * conv_params(c, c) + conv_params(c, c)
                + 2 * conv_params(c, 4 * c) + conv_params(c, 3))

    model = build_model("edsr", scale=4, preset="paper")
    assert model.num_params() == edsr_x4(256)
    assert abs(edsr_x4(256) / 1e6 - 43.1) < 0.05
    assert model.num_params(0.25) == edsr_x4(64)
    assert abs(edsr_x4(64) / 1e6 - 2.7) < 0.05
    assert sum(p.numel() for p in model.export(0.25).parameters()) == edsr_x4(64)


def test_slim_conv_uses_official_truncation():
    conv = SlimConv2d(8, 10)
    x = torch.randn(1, 4, 5, 5)  # int(0.5 * 8) = 4 input channels
    y = conv(x, 0.5)
    expected = F.conv2d(x, conv.weight[:5, :4], conv.bias[:5], padding=1)
    torch.testing.assert_close(y, expected)
    assert conv.out_channels_at(0.33) == 3  # int(3.3)


def test_grouped_input_slices_each_block():
    conv = SlimConv2d(12, 4, 1, in_groups=3)  # input = cat of 3 blocks of 4 channels
    w, _ = conv.sliced(6, 0.5)  # 3 blocks of 2
    expected = conv.weight[:2][:, [0, 1, 4, 5, 8, 9]]
    torch.testing.assert_close(w, expected)


def test_upsampler_slice_matches_shuffled_channels():
    # The first s^2 * w' conv outputs shuffle exactly onto the first w' channels.
    conv = SlimConv2d(8, 32, out_groups=4)
    x = torch.randn(1, 8, 3, 3)
    full = F.pixel_shuffle(conv(x), 2)
    sub = F.pixel_shuffle(F.conv2d(x, conv.weight[:16], conv.bias[:16], padding=1), 2)
    torch.testing.assert_close(full[:, :4], sub)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("width", [1.0, 0.5, 0.25, 0.3])
def test_export_equals_sub_network(arch, scale, width):
    model = build_model(arch, scale=scale, preset="demo").eval()
    x = torch.rand(2, 3, 7, 5)
    student = model.export(width)
    with torch.no_grad():
        ref, out = model(x, width), student(x)
    assert out.shape == (2, 3, 7 * scale, 5 * scale)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    for p in student.parameters():
        assert p.is_contiguous()
    # Own storage: changing the teacher does not change the student.
    with torch.no_grad():
        model.head.weight.add_(1.0)
        torch.testing.assert_close(student(x), out)


def test_export_is_no_slice_at_run_time(monkeypatch):
    student = build_model("edsr", 2, preset="demo").export(0.25)
    monkeypatch.setattr(SlimConv2d, "sliced", lambda *a: pytest.fail("exported student sliced a weight"))
    student(torch.rand(1, 3, 4, 4))


def test_carn_slicing_differs_from_official_misalignment():
    model = SlimCARN(scale=2, n_feats=8)
    fuse = model.body.units[0].fuse[0]  # in: cat of two 8-channel blocks
    w, _ = fuse.sliced(8, 0.5)
    official = fuse.weight[:4, :8]
    assert not torch.equal(w, official)
    torch.testing.assert_close(w[:, 4:], fuse.weight[:4, 8:12])


def test_width_one_student_is_teacher():
    model = build_model("rcan", 2, preset="demo")
    x = torch.rand(1, 3, 6, 6)
    torch.testing.assert_close(model(x), model(x, 1.0))
    torch.testing.assert_close(model.export(1.0)(x), model(x))


def test_model_from_config_roundtrip():
    model = SlimRCAN(scale=3, n_feats=16, n_resgroups=1, n_resblocks=2, reduction=4)
    student = model.export(0.5)
    rebuilt = model_from_config(student.arch, student.config)
    rebuilt.load_state_dict(student.state_dict())
    x = torch.rand(1, 3, 5, 5)
    torch.testing.assert_close(rebuilt(x), student(x))


def test_gradients_reach_only_the_shared_slice():
    model = SlimEDSR(scale=2, n_feats=8, n_resblocks=1, res_scale=1.0)
    model(torch.rand(1, 3, 4, 4), 0.5).mean().backward()
    g = model.body[0].conv1.weight.grad
    assert g[:4, :4].abs().sum() > 0
    assert g[4:].abs().sum() == 0 and g[:, 4:].abs().sum() == 0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m(torch.rand(1, 4, 8, 8)), "3 \\(RGB\\) channels"),
        (lambda m: m(torch.rand(3, 8, 8)), "4-D"),
        (lambda m: m(torch.randint(0, 255, (1, 3, 8, 8))), "floating-point"),
        (lambda m: m(torch.rand(1, 3, 8, 8), width=1.5), "width"),
        (lambda m: m(torch.rand(1, 3, 8, 8), width=0.0), "width"),
        (lambda m: m(torch.rand(1, 3, 8, 8), width=0.01), "0 channels"),
        (lambda m: m.export(0.01), "0 channels"),
    ],
)
def test_bad_input_is_named(call, match):
    model = build_model("edsr", 2, preset="demo")
    with pytest.raises((ValueError, TypeError), match=match):
        call(model)


@pytest.mark.parametrize("scale", [1, 5, 8, 2.0, True])
def test_bad_scale(scale):
    for cls in (SlimEDSR, SlimRCAN, SlimCARN):
        with pytest.raises(ValueError, match="scale"):
            cls(scale=scale, n_feats=8)


def test_registry_errors_and_duplicates():
    from csd_fast.models import register_model

    with pytest.raises(ValueError, match="name"):
        build_model("srcnn")
    with pytest.raises(ValueError, match="preset"):
        build_model("edsr", preset="huge")
    with pytest.raises(ValueError, match="already registered"):
        register_model("edsr")(SlimEDSR)
