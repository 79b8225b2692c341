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


def test_numpy_twins_agree_with_torch_on_bgr_input():
    sr, hr = _rand_pair(h=37, w=41, b=1)
    a, b = _to_hwc255(sr[0])[..., ::-1], _to_hwc255(hr[0])[..., ::-1]  # BGR, as cv2 reads
    assert calculate_psnr(a, b, 4, test_y_channel=True) == pytest.approx(psnr_y(sr, hr, 4), abs=1e-6)
    assert calculate_ssim(a, b, 4, test_y_channel=True) == pytest.approx(ssim_y(sr, hr, 4), abs=1e-6)
    # RGB passed where BasicSR expects BGR weights R and B the wrong way round: a different number
    assert abs(calculate_psnr(a[..., ::-1], b[..., ::-1], 4, test_y_channel=True) - psnr_y(sr, hr, 4)) > 1e-3
    # 3-D and 4-D torch inputs agree
    assert psnr_y(sr[0], hr[0], 4) == psnr_y(sr, hr, 4)


def test_basicsr_signature_and_defaults():
    import inspect

    for fn in (calculate_psnr, calculate_ssim):
        params = inspect.signature(fn).parameters
        assert list(params)[:5] == ["img", "img2", "crop_border", "input_order", "test_y_channel"]
        assert params["input_order"].default == "HWC" and params["test_y_channel"].default is False


def _basicsr_restated(img, img2, crop_border, input_order="HWC", test_y_channel=False):
    """BasicSR's psnr_ssim.py steps, restated here: reorder (2-D -> HxWx1, CHW -> HWC), crop,
    Y via float32 ``(B, G, R) / 255 . (24.966, 128.553, 65.481) + 16``, then float64; SSIM with the
    2-D Gaussian window (outer product of cv2.getGaussianKernel(11, 1.5)) on the valid region."""
    def prep(x):
        x = x[..., None] if x.ndim == 2 else (x.transpose(1, 2, 0) if input_order == "CHW" else x)
        if crop_border:
            x = x[crop_border:-crop_border, crop_border:-crop_border, ...]
        if test_y_channel and x.shape[2] == 3:
            x32 = x.astype(np.float32) / 255.0
            x = ((x32 @ np.array([24.966, 128.553, 65.481], np.float32) + 16.0) / 255.0 * 255.0)[..., None]
        return x.astype(np.float64)

    a, b = prep(img), prep(img2)
    psnr = 10 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2))
    k = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    win = np.outer(k / k.sum(), k / k.sum())

    def filt(x):
        v = np.lib.stride_tricks.sliding_window_view(x, (11, 11))
        return np.einsum("ijkl,kl->ij", v, win)

    ssims = []
    for c in range(a.shape[2]):
        x, y = a[..., c], b[..., c]
        mx, my = filt(x), filt(y)
        sxx, syy, sxy = filt(x * x) - mx ** 2, filt(y * y) - my ** 2, filt(x * y) - mx * my
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        ssims.append((((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))).mean())
    return psnr, float(np.mean(ssims))


@pytest.mark.parametrize("case", ["hwc_u8", "hwc_y", "chw_u8", "grey_2d", "float_unrounded"])
def test_numpy_metrics_agree_with_basicsr(case):
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (30, 27, 3)).astype(np.uint8)
    b = np.clip(a + rng.normal(0, 8, a.shape), 0, 255).astype(np.uint8)
    kw = {"crop_border": 2}
    if case == "hwc_y":
        kw["test_y_channel"] = True
    elif case == "chw_u8":
        a, b, kw["input_order"] = a.transpose(2, 0, 1), b.transpose(2, 0, 1), "CHW"
    elif case == "grey_2d":
        a, b = a[..., 1], b[..., 1]
    elif case == "float_unrounded":  # used as given: no rounding, no clipping
        a, b = a.astype(np.float64) + 0.3, b.astype(np.float64) - 0.2
    psnr, ssim = _basicsr_restated(a, b, **kw)
    assert calculate_psnr(a, b, **kw) == pytest.approx(psnr, abs=1e-4)
    assert calculate_ssim(a, b, **kw) == pytest.approx(ssim, abs=1e-6)


def test_torch_metrics_refuse_other_scales():
    hr = torch.rand(1, 3, 16, 16)
    with pytest.raises(TypeError, match=r"sr must be a float tensor in \[0, 1\], got dtype torch.uint8"):
        psnr_y((hr * 255).round().to(torch.uint8), hr, 0)
    with pytest.raises(ValueError, match=r"hr must be a float image in \[0, 1\].*divide an image on \[0, 255\] by 255"):
        ssim_y(hr, hr * 255, 0)
    hr[..., 0, 0] = 1.0
    overshoot = hr.clone()
    overshoot[..., 0, 0] = 1.08  # a network output slightly above 1 is clamped, as before
    assert psnr_y(overshoot, hr, 0) == math.inf


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
    with pytest.raises(ValueError, match=r"img and img2 must have the same shape.*\(16, 16\)"):
        calculate_psnr(np.zeros((16, 16, 3)), np.zeros((16, 16)), 0)
    with pytest.raises(ValueError, match="input_order"):
        calculate_ssim(np.zeros((16, 16, 3)), np.zeros((16, 16, 3)), 0, input_order="NCHW")
