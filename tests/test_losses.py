"""ContrastiveLoss and the VGG19 trunk against the official formulation written out by hand."""
import warnings

import pytest
import torch

from csd_fast.losses import ContrastiveLoss, TAP_WEIGHTS, VGG19Taps
from csd_fast.negatives import Negatives, make_negatives
from helpers import TinyEncoder


def official_l1_contrast(student_feats, teacher_feats, neg_feats, weights):
    """The official CSD ``L1_forward``: repeat shared negatives to [K,B,...], sum over K of means."""
    loss = 0
    for s, t, n, w in zip(student_feats, teacher_feats, neg_feats, weights):
        n = n.unsqueeze(0).repeat(s.shape[0], 1, 1, 1, 1).permute(1, 0, 2, 3, 4)
        d_ts = torch.nn.functional.l1_loss(t.detach(), s)
        d_sn = torch.mean(torch.abs(n.detach() - s).sum(0))
        loss = loss + w * d_ts / (d_sn + 1e-7)
    return loss


def test_matches_official_formulation_and_gradients():
    enc = TinyEncoder()
    loss_fn = ContrastiveLoss(encoder=enc, weights=(0.5, 1.0))
    s = torch.rand(3, 3, 8, 8, requires_grad=True)
    t = torch.rand(3, 3, 8, 8)
    neg = Negatives(torch.rand(4, 3, 8, 8))
    ours = loss_fn(s, t, neg)
    s2 = s.detach().clone().requires_grad_(True)
    ref = official_l1_contrast(enc(s2), enc(t), enc(neg.images), (0.5, 1.0))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    (g,) = torch.autograd.grad(ours, s)
    (g_ref,) = torch.autograd.grad(ref, s2)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-9)


def test_teacher_is_detached_and_negatives_encoded_once():
    enc = TinyEncoder()
    loss_fn = ContrastiveLoss(encoder=enc, weights=(0.5, 1.0))
    lr = torch.rand(4, 3, 4, 4)
    s = torch.rand(4, 3, 8, 8, requires_grad=True)
    t = torch.rand(4, 3, 8, 8, requires_grad=True)
    neg = make_negatives("others", lr, 3, scale=2)  # 4 distinct images, 3 per anchor
    loss = loss_fn(s, t, neg)
    loss.backward()
    assert t.grad is None and s.grad.abs().sum() > 0
    assert enc.images_seen == 4 + 4 + 4  # student, teacher, distinct negatives (not K*B = 12)


def test_sample_reduction_is_mean_of_per_sample_ratios():
    enc = TinyEncoder()
    loss_fn = ContrastiveLoss(encoder=enc, weights=(1.0, 0.0), reduction="sample")
    s, t = torch.rand(2, 3, 6, 6), torch.rand(2, 3, 6, 6)
    negs = torch.rand(3, 3, 6, 6)
    fs, ft, fn = enc(s)[0], enc(t)[0], enc(negs)[0]
    ratios = []
    for b in range(2):
        num = (fs[b] - ft[b]).abs().mean()
        den = sum((fs[b] - fn[k]).abs().mean() for k in range(3))
        ratios.append(num / (den + 1e-7))
    torch.testing.assert_close(loss_fn(s, t, Negatives(negs)), torch.stack(ratios).mean())


def test_eager_backend_equals_auto():
    enc = TinyEncoder()
    s, t, neg = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), Negatives(torch.rand(3, 3, 8, 8))
    a = ContrastiveLoss(encoder=enc, weights=(0.5, 1.0))(s, t, neg)
    b = ContrastiveLoss(encoder=enc, weights=(0.5, 1.0), backend="eager")(s, t, neg)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_encoder_weight_count_mismatch_is_named():
    loss_fn = ContrastiveLoss(encoder=TinyEncoder(), weights=(1.0,))
    with pytest.raises(ValueError, match="encoder"):
        loss_fn(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), Negatives(torch.rand(1, 3, 4, 4)))
    with pytest.raises(ValueError, match="backend"):
        ContrastiveLoss(encoder=TinyEncoder(), backend="cuda")


def _random_vgg():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VGG19Taps()


def test_vgg_taps_shapes_and_frozen():
    vgg = _random_vgg()
    taps = vgg(torch.rand(1, 3, 32, 32))
    assert [t.shape[1] for t in taps] == [64, 128, 256, 512, 512]
    assert [t.shape[-1] for t in taps] == [32, 16, 8, 4, 2]
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    assert len(TAP_WEIGHTS) == 5 and TAP_WEIGHTS[0] == 1 / 32


def test_vgg_random_init_warns_loudly(monkeypatch):
    monkeypatch.setattr("csd_fast.losses.vgg.default_weights_path", lambda: None)
    with pytest.warns(UserWarning, match="RANDOM VGG19"):
        vgg = VGG19Taps()
    assert vgg.pretrained is False


def test_vgg_loads_torchvision_format_file(tmp_path):
    src = _random_vgg()
    state = {k: v.clone() + 1.0 for k, v in src.state_dict().items() if k.startswith("features.")}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # the torchvision file has a classifier too
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    vgg = VGG19Taps(str(path))
    assert vgg.pretrained
    torch.testing.assert_close(vgg.features[28].weight, state["features.28.weight"])


def test_vgg_bad_file_is_named(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pth"):
        VGG19Taps(str(bad))
    partial = tmp_path / "partial.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, partial)
    with pytest.raises(ValueError, match="missing"):
        VGG19Taps(str(partial))


def test_custom_encoder_stays_in_eval_mode():
    enc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
    loss_fn = ContrastiveLoss(encoder=enc, weights=(1.0,))
    loss_fn.train()
    assert not enc.training and not enc[1].training


def _torchvision_layout_features() -> torch.nn.Sequential:
    """VGG19 ``features`` as torchvision lays it out (config "E"), written out here independently."""
    layers, c = [], 3
    for block, (out, convs) in enumerate([(64, 2), (128, 2), (256, 4), (512, 4), (512, 4)]):
        for _ in range(convs):
            layers += [torch.nn.Conv2d(c, out, 3, padding=1), torch.nn.ReLU(inplace=False)]
            c = out
        layers.append(torch.nn.MaxPool2d(2, 2))
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("vgg_input", ["official", "imagenet"])
def test_vgg_taps_equal_torchvision_slices(tmp_path, vgg_input):
    """Each tap equals the official slices [0:2], [2:7], [7:12], [12:21], [21:30] of torchvision's
    layout, fed 8-bit RGB ("official") or ImageNet-normalized [0, 1] input ("imagenet")."""
    ref = _torchvision_layout_features().double()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * (0.05 if p.dim() == 4 else 0.1))
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save({f"features.{k}": v.float() for k, v in ref.state_dict().items()}, path)
    vgg = VGG19Taps(str(path), vgg_input=vgg_input).double()
    x = torch.rand(2, 3, 32, 32, generator=gen, dtype=torch.float64)
    if vgg_input == "official":
        h = x * 255
    else:
        mean = torch.tensor([0.485, 0.456, 0.406]).double().view(1, 3, 1, 1)  # constants held in fp32
        std = torch.tensor([0.229, 0.224, 0.225]).double().view(1, 3, 1, 1)
        h = (x - mean) / std
    ref = ref.float().double()  # the weights as stored (fp32) in the file
    expected = []
    for start, end in [(0, 2), (2, 7), (7, 12), (12, 21), (21, 30)]:
        h = ref[start:end](h)
        expected.append(h)
    got = vgg(x)
    assert len(got) == 5
    for j, (g, e) in enumerate(zip(got, expected)):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-9 * e.abs().max().item(), msg=f"tap {j}")


def test_vgg_input_is_checked():
    with pytest.raises(ValueError, match="vgg_input"):
        VGG19Taps(vgg_input="bgr")
