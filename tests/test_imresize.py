"""MATLAB bicubic imresize against hand-derived weights and a loop written from MATLAB's algorithm."""
import math

import numpy as np
import pytest
import torch

from csd_fast.data import bicubic_downscale, bicubic_upsample, imresize, mod_crop

# 4 -> 2 (scale 1/2, antialiased): centre of output pixel 1 is u = 1.5; the stretched kernel
# 0.5 * k(d / 2) at d = +-0.5, +-1.5, +-2.5, +-3.5 gives (x2) 0.8671875, 0.2265625,
# -0.0703125, -0.0234375; taps j = 0, -1, -2 mirror onto 1, 2, 3 and j = 5 onto 4.
_W_DOWN2 = np.array([[0.546875, 0.3984375, 0.1015625, -0.046875],
                     [-0.046875, 0.1015625, 0.3984375, 0.546875]])


def _keys(x, a=-0.5):
    x = abs(x)
    if x <= 1:
        return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
    if x < 2:
        return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
    return 0.0


def _matlab_resize_1d(v, out_len, scale):
    """Scalar loop after MATLAB's imresize.m contributions(): kernel, width, taps, symmetric."""
    n = len(v)
    width = 4 / scale if scale < 1 else 4
    mirror = list(range(n)) + list(range(n - 1, -1, -1))
    out = []
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        acc, total = 0.0, 0.0
        for p in range(math.ceil(width) + 2):
            j = left + p
            w = scale * _keys(scale * (u - j)) if scale < 1 else _keys(u - j)
            acc += w * v[mirror[(j - 1) % (2 * n)]]
            total += w
        out.append(acc / total)
    return np.array(out)


def _matlab_resize_2d(img, out_h, out_w):
    rows = np.stack([_matlab_resize_1d(img[:, c], out_h, out_h / img.shape[0]) for c in range(img.shape[1])], 1)
    return np.stack([_matlab_resize_1d(rows[r], out_w, out_w / img.shape[1]) for r in range(out_h)], 0)


def test_ramp_1_to_4_halved_matches_matlab():
    x = torch.arange(1, 5, dtype=torch.float64).view(1, 1, 4)
    out = imresize(x, size=(1, 2))[0, 0]
    # MATLAB: imresize(1:4, [1 2]) = [1.4609 3.5391]
    assert out.tolist() == pytest.approx([1.4609375, 3.5390625], abs=1e-12)


def test_4x4_downscale_by_2_uses_hand_derived_weights():
    img = np.random.default_rng(0).random((4, 4))
    expected = _W_DOWN2 @ img @ _W_DOWN2.T
    out = bicubic_downscale(torch.from_numpy(img)[None], 2)[0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_upscale_by_2_first_pixel_by_hand():
    # u = 0.75; taps -1, 0, 1, 2 (mirror -> 2, 1, 1, 2) at d = 1.75, 0.75, -0.25, -1.25
    # k = -0.0234375, 0.2265625, 0.8671875, -0.0703125 -> 1.09375 * v1 - 0.09375 * v2
    x = torch.arange(1, 5, dtype=torch.float64).view(1, 1, 4)
    out = imresize(x, scale=2)
    assert out.shape == (1, 2, 8)
    assert out[0, 0, 0].item() == pytest.approx(1.09375 * 1 - 0.09375 * 2, abs=1e-12)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 0.75, 1.7, 2, 3])
def test_constant_image_stays_exact(scale):
    x = torch.full((3, 12, 18), 0.3, dtype=torch.float64)
    out = imresize(x, scale=scale)
    assert out.shape == (3, math.ceil(12 * scale), math.ceil(18 * scale))
    torch.testing.assert_close(out, torch.full_like(out, 0.3), rtol=0, atol=1e-12)


@pytest.mark.parametrize("s", [2, 4])
def test_linear_ramp_interior_is_reproduced(s):
    # On a ramp v(j) = j, pixel i of the output (1-based) sits at u = s*i - (s-1)/2.
    w = 16 * s
    ramp = torch.arange(1, w + 1, dtype=torch.float64).expand(1, 8 * s, w)
    out = bicubic_downscale(ramp, s)[0, 0]
    u = s * torch.arange(1, w // s + 1, dtype=torch.float64) - (s - 1) / 2
    interior = slice(3, -3)  # away from the mirrored borders
    torch.testing.assert_close(out[interior], u[interior], rtol=0, atol=1e-10)


@pytest.mark.parametrize("out_hw", [(9, 7), (18, 15), (4, 5), (12, 10)])
def test_matches_loop_reference_for_fractional_and_integer_scales(out_hw):
    img = np.random.default_rng(1).random((12, 10))
    expected = _matlab_resize_2d(img, *out_hw)
    out = imresize(torch.from_numpy(img)[None], size=out_hw)[0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_batched_equals_per_image_and_float32():
    x = torch.rand(2, 3, 24, 20)
    out = bicubic_downscale(x, 4)
    assert out.shape == (2, 3, 6, 5) and out.dtype == torch.float32
    torch.testing.assert_close(out[1], bicubic_downscale(x[1], 4))
    torch.testing.assert_close(out.double(), bicubic_downscale(x.double(), 4), rtol=0, atol=1e-6)


def test_downscale_needs_divisible_size():
    with pytest.raises(ValueError, match=r"divisible by scale=3, got 10x9 \(mod_crop\(hr, 3\) first gives 9x9"):
        bicubic_downscale(torch.rand(3, 10, 9), 3)
    with pytest.raises(ValueError, match="scale must be a positive int, got 2.5"):
        bicubic_downscale(torch.rand(3, 10, 10), 2.5)


def test_imresize_bad_arguments():
    with pytest.raises(ValueError, match="exactly one of scale and size"):
        imresize(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="scale must be > 0"):
        imresize(torch.rand(3, 8, 8), scale=0)
    with pytest.raises(ValueError, match=r"x must be a float tensor.*\(8, 8\)"):
        imresize(torch.rand(8, 8), scale=0.5)


def test_bicubic_upsample_is_pytorch_bicubic_not_matlab():
    # align_corners=False, a = -0.75, replicate border: output 0 samples t = -0.25; taps at
    # -2, -1, 0, 1 (clamped to 0, 0, 0, 1) with k = -0.03515625, 0.26171875, 0.87890625, -0.10546875.
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(1, 1, 4).expand(3, 2, 4)
    out = bicubic_upsample(x, 2)
    assert out.shape == (3, 4, 8)
    assert out[0, 0, 0].item() == pytest.approx(1.10546875 - 2 * 0.10546875, abs=1e-12)
    assert out[0, 0, 0].item() != pytest.approx(imresize(x, scale=2)[0, 0, 0].item(), abs=1e-3)


def test_mod_crop_drops_bottom_right():
    x = torch.arange(7 * 10.).view(1, 7, 10)
    out = mod_crop(x, 3)
    assert out.shape == (1, 6, 9) and torch.equal(out, x[:, :6, :9])
    assert torch.equal(mod_crop(x, 1), x)
