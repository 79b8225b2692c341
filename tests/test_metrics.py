"""PSNR/SSIM on Y against closed forms, math written here, and scikit-image."""
import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from csd_fast.metrics import (
    calculate_psnr, calculate_ssim, psnr_y, psnr_y_per_image, ssim_y, ssim_y_per_image,
)


def _rand_pair(h=40, w=36, b=2, noise=0.05):
    hr = torch.rand(b, 3, h, w, dtype=torch.float64)
    sr = (hr + noise * torch.randn_like(hr)).clamp(0, 1)
    return sr, hr


def _to_hwc255(t):
    return np.round(t.clamp(0, 1).numpy().transpose(1, 2, 0) * 255).astype(np.uint8)


def _y_here(img_u8):
    """BT.601 Y on [0,255] from uint8 RGB, written out independently of the library."""
    r, g, b = (img_u8[..., i].astype(np.float64) / 255 for i in range(3))
    return 16 + 65.481 * r + 128.553 * g + 24.966 * b


def test_psnr_closed_form_on_constant_images():
    # Two grey images whose R=G=B differ by 10 levels: Y differs by 10 * (65.481+128.553+24.966)/255.
    hr = torch.full((3, 16, 16), 100 / 255)
    sr = torch.full((3, 16, 16), 110 / 255)
    dy = 10 * 219.0 / 255
    expected = 20 * math.log10(255 / dy)
    assert psnr_y(sr, hr, crop_border=0) == pytest.approx(expected, abs=1e-9)
    assert psnr_y(sr, hr, crop_border=4) == pytest.approx(expected, abs=1e-9)


def test_psnr_matches_numpy_math_written_here():
    sr, hr = _rand_pair()
    for i in range(2):
        a, b = _to_hwc255(sr[i]), _to_hwc255(hr[i])
        ya, yb = _y_here(a)[3:-3, 3:-3], _y_here(b)[3:-3, 3:-3]
        expected = 10 * np.log10(255 ** 2 / np.mean((ya - yb) ** 2))
        assert psnr_y_per_image(sr, hr, 3)[i].item() == pytest.approx(expected, abs=1e-9)
    assert psnr_y(sr, hr, 3) == pytest.approx(psnr_y_per_image(sr, hr, 3).mean().item())


def test_quantization_happens_before_metric():
    hr = torch.rand(1, 3, 24, 24)
    # A sub-half-level perturbation disappears after rounding to 8 bit.
    q = (hr * 255).round() / 255
    assert psnr_y(q + 0.4 / 255, q, 0) == math.inf
    assert ssim_y(q + 0.4 / 255, q, 0) == pytest.approx(1.0, abs=1e-12)


def test_identical_images_give_inf_psnr_and_unit_ssim():
    _, hr = _rand_pair()
    assert psnr_y(hr, hr, 2) == math.inf
    assert calculate_psnr(_to_hwc255(hr[0]), _to_hwc255(hr[0]), 2) == math.inf
    assert ssim_y(hr, hr, 2) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("crop", [0, 4])
def test_ssim_matches_skimage_configured_as_basicsr(crop):
    sr, hr = _rand_pair(h=48, w=52, noise=0.1)
    for i in range(2):
        ya = _y_here(_to_hwc255(sr[i]))
        yb = _y_here(_to_hwc255(hr[i]))
        if crop:
            ya, yb = ya[crop:-crop, crop:-crop], yb[crop:-crop, crop:-crop]
        # skimage filters with reflect padding, then averages over the map cropped by the
        # window radius (5 = int(3.5 * 1.5 + 0.5)), i.e. exactly the 'valid' region.
        ref = structural_similarity(ya, yb, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=255)
        assert ssim_y_per_image(sr, hr, crop)[i].item() == pytest.approx(ref, abs=1e-9)


def test_numpy_twins_agree_with_torch():
    sr, hr = _rand_pair(h=37, w=41, b=1)
    a, b = _to_hwc255(sr[0]), _to_hwc255(hr[0])
    assert calculate_psnr(a, b, 4) == pytest.approx(psnr_y(sr, hr, 4), abs=1e-6)
    assert calculate_ssim(a, b, 4) == pytest.approx(ssim_y(sr, hr, 4), abs=1e-6)
    # float 0..255 input is quantized the same way
    af = sr[0].numpy().transpose(1, 2, 0) * 255
    assert calculate_psnr(af, b, 4) == pytest.approx(psnr_y(sr, hr, 4), abs=1e-6)
    # 3-D and 4-D torch inputs agree
    assert psnr_y(sr[0], hr[0], 4) == psnr_y(sr, hr, 4)


def test_rgb_mode_of_numpy_twin():
    sr, hr = _rand_pair(b=1)
    a, b = _to_hwc255(sr[0]).astype(np.float64), _to_hwc255(hr[0]).astype(np.float64)
    expected = 10 * np.log10(255 ** 2 / np.mean((a - b) ** 2))
    assert calculate_psnr(a, b, 0, test_y_channel=False) == pytest.approx(expected, abs=1e-9)


def test_crop_border_only_sees_the_interior():
    hr = torch.rand(1, 3, 20, 20)
    sr = hr.clone()
    sr[..., :3, :] = 1 - sr[..., :3, :]  # damage the top 3 rows only
    assert psnr_y(sr, hr, 3) == math.inf
    assert psnr_y(sr, hr, 2) < 100
    assert ssim_y(sr, hr, 3) == pytest.approx(1.0, abs=1e-12)


def test_bad_inputs_name_the_argument():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"sr and hr must have the same shape.*\(1, 3, 16, 16\).*\(1, 3, 16, 15\)"):
        psnr_y(x, torch.rand(1, 3, 16, 15), 0)
    with pytest.raises(ValueError, match=r"sr must be an RGB tensor.*\(1, 1, 16, 16\)"):
        ssim_y(torch.rand(1, 1, 16, 16), x, 0)
    with pytest.raises(ValueError, match=r"hr must be an RGB tensor.*\(16, 16\)"):
        psnr_y(x[0], torch.rand(16, 16), 0)
    with pytest.raises(ValueError, match="crop_border"):
        psnr_y(x, x, -1)
    with pytest.raises(ValueError, match="crop_border=4 leaves 8x8"):
        ssim_y(x, x, 4)  # 8x8 is smaller than the 11x11 window
    with pytest.raises(ValueError, match=r"img2 must be an RGB array.*\(16, 16\)"):
        calculate_psnr(np.zeros((16, 16, 3)), np.zeros((16, 16)), 0)
