"""Negatives: which images, shared or per anchor, and errors for impossible K."""
import pytest
import torch
import torch.nn.functional as F

from csd_fast.negatives import make_negatives


def upsampled(lr, scale):
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)


def test_official_is_the_first_k_batch_images_shared():
    lr = torch.rand(6, 3, 4, 5)
    neg = make_negatives("official", lr, 4, scale=2, generator=torch.Generator().manual_seed(3))
    assert neg.index is None and neg.k == 4 and neg.images.shape == (4, 3, 8, 10)
    ups = upsampled(lr, 2)
    matches = [int(((ups - img).abs().amax(dim=(1, 2, 3)) < 1e-6).nonzero()) for img in neg.images]
    assert matches == torch.randperm(4, generator=torch.Generator().manual_seed(3)).tolist()  # lr[randperm(K)]


def test_others_never_uses_the_anchor_itself():
    lr = torch.rand(5, 3, 4, 4)
    for trial in range(5):
        neg = make_negatives("others", lr, 4, scale=3, generator=torch.Generator().manual_seed(trial))
        assert neg.index.shape == (4, 5)
        for b in range(5):
            col = neg.index[:, b].tolist()
            assert b not in col and len(set(col)) == 4
    feats = torch.arange(5.0)
    assert neg.gather(feats).shape == (4, 5)


def test_self_blur_is_own_upsample():
    lr = torch.rand(3, 3, 4, 4)
    neg = make_negatives("self-blur", lr, 1, scale=2)
    torch.testing.assert_close(neg.images[neg.index[0]], upsampled(lr, 2))


@pytest.mark.parametrize(
    "kind, k, match",
    [("official", 5, "neg_num"), ("others", 4, "neg_num"), ("self-blur", 2, "exactly K = 1"),
     ("official", 0, "neg_num"), ("blurry", 1, "negatives")],
)
def test_impossible_requests_are_named(kind, k, match):
    with pytest.raises(ValueError, match=match):
        make_negatives(kind, torch.rand(4, 3, 4, 4), k, scale=2)
