import pytest
import torch
import torch.nn.functional as F

from csd_fast.inference import self_ensemble, tiled_forward, upscale_tensor
from csd_fast.models import build_model


def _tiny(arch="edsr", scale=2):
    overrides = {"edsr": dict(n_feats=8, n_resblocks=2), "rcan": dict(n_feats=8, n_resgroups=1, n_resblocks=1, reduction=4),
                 "carn": dict(n_feats=8)}[arch]
    return build_model(arch, scale=scale, preset=None, **overrides).eval()


def _ensemble_by_rotations(fn, x):
    """The 8 dihedral transforms as 4 rotations x optional mirror: independent of the library's enumeration."""
    outs = []
    for rot in range(4):
        for mirror in (False, True):
            y = torch.rot90(x, rot, (2, 3))
            y = y.flip(3) if mirror else y
            o = fn(y)
            o = o.flip(3) if mirror else o
            outs.append(torch.rot90(o, -rot, (2, 3)))
    return torch.stack(outs).mean(0)


@torch.no_grad()
def test_self_ensemble_matches_hand_built():
    model = _tiny()
    x = torch.rand(2, 3, 9, 13)
    got = self_ensemble(model, x)
    want = _ensemble_by_rotations(model, x)
    assert got.shape == (2, 3, 18, 26)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert (got - model(x)).abs().max() > 1e-4  # a random net is not flip-equivariant: the mean is not one pass


def test_self_ensemble_of_equivariant_fn_is_the_fn():
    x = torch.rand(1, 3, 5, 7)
    fn = lambda y: F.interpolate(y, scale_factor=3, mode="nearest")  # noqa: E731
    torch.testing.assert_close(self_ensemble(fn, x), fn(x))


@pytest.mark.parametrize("arch", ["edsr", "carn"])
@torch.no_grad()
def test_tiled_forward_equals_one_pass(arch):
    model = _tiny(arch)
    x = torch.rand(1, 3, 37, 29)
    full = model(x)
    tiled = tiled_forward(model, x, tile=12, overlap=16, scale=2)
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=1e-5)
    # without context, tile borders differ: the comparison above can fail
    assert (tiled_forward(model, x, tile=12, overlap=0, scale=2) - full).abs().max() > 1e-4


@torch.no_grad()
def test_tiled_forward_rcan_close_and_single_tile_exact():
    model = _tiny("rcan")
    x = torch.rand(1, 3, 24, 20)
    torch.testing.assert_close(tiled_forward(model, x, tile=64, overlap=4, scale=2), model(x))
    tiled = tiled_forward(model, x, tile=10, overlap=12, scale=2)
    assert (tiled - model(x)).abs().max() < 0.05  # channel attention is global: close, not exact


def test_tiled_forward_bad_arguments():
    model = _tiny()
    x = torch.rand(1, 3, 20, 20)
    with pytest.raises(ValueError, match="tile"):
        tiled_forward(model, x, tile=0, overlap=2, scale=2)
    with pytest.raises(ValueError, match="overlap"):
        tiled_forward(model, x, tile=8, overlap=-1, scale=2)
    with pytest.raises(ValueError, match="scale: fn turned"):
        tiled_forward(model, x, tile=8, overlap=2, scale=3)


def test_upscale_tensor_clamps_and_composes():
    model = _tiny()
    x = torch.rand(1, 3, 20, 18)
    out = upscale_tensor(model, x, scale=2, tile=8, overlap=16, ensemble=True)
    assert out.min() >= 0 and out.max() <= 1
    with torch.no_grad():
        torch.testing.assert_close(out, self_ensemble(model, x).clamp(0, 1), atol=1e-5, rtol=1e-5)
