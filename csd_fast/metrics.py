"""PSNR and SSIM on the Y channel, BasicSR / official-CSD convention.

**Torch** (:func:`psnr_y`, :func:`ssim_y` and ``*_per_image``): float RGB tensors in [0, 1],
``[B,3,H,W]`` or ``[3,H,W]``. They

1. quantize to 8 bit: ``round(clamp(x, 0, 1) * 255)`` (network outputs overshoot [0, 1] a little;
   a tensor that is not floating point, or reaches beyond [-1, 2], is on another scale, e.g. a
   uint8 or a float [0, 255] image, and is refused rather than clamped),
2. crop ``crop_border`` pixels from every border,
3. convert to Y (ITU-R BT.601, not rounded): ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``
   with R, G, B on [0, 255], i.e. Y on [16, 235],
4. PSNR = ``10 log10(255^2 / MSE)``; SSIM with an 11x11 Gaussian window, sigma 1.5,
   ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``, statistics on the 'valid' region only
   (as BasicSR ``calculate_ssim``), averaged over the map.

**Numpy, BasicSR's contract** (:func:`calculate_psnr`, :func:`calculate_ssim`, same names, same
arguments and defaults as ``basicsr.metrics.psnr_ssim``): ``img``/``img2`` on [0, 255] (uint8 or
float, used as given: no clipping or rounding), **BGR** channel order as read by cv2,
``input_order`` "HWC" (default) or "CHW", 2-D grey arrays accepted, ``test_y_channel=False`` by
default (all channels; SSIM is the mean over channels), Y from BGR with the formula above.
BasicSR converts to Y in float32; here everything is float64 (the two agree to ~1e-5 dB).
An RGB array therefore needs ``img[..., ::-1]``; with ``test_y_channel=True`` and BGR uint8 input
they agree with the torch functions to ~1e-10.

Identical images have MSE 0 and PSNR ``inf`` (as BasicSR); a batch mean containing an
``inf`` is ``inf`` — use :func:`psnr_y_per_image` to see which image it was.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "psnr_y", "ssim_y", "psnr_y_per_image", "ssim_y_per_image",
    "calculate_psnr", "calculate_ssim",
]

_Y_COEFFS = (65.481, 128.553, 24.966)
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
_WIN = 11
_SIGMA = 1.5


def _gaussian_1d() -> np.ndarray:
    """cv2.getGaussianKernel(11, 1.5): exp(-(i - 5)^2 / (2 sigma^2)), normalized to sum 1."""
    x = np.arange(_WIN, dtype=np.float64) - (_WIN - 1) / 2
    g = np.exp(-(x ** 2) / (2 * _SIGMA ** 2))
    return g / g.sum()


def _check_crop(crop_border, h: int, w: int, min_side: int) -> None:
    if not isinstance(crop_border, int) or crop_border < 0:
        raise ValueError(f"crop_border must be an int >= 0, got {crop_border!r}")
    if min(h, w) - 2 * crop_border < min_side:
        raise ValueError(
            f"crop_border={crop_border} leaves {h - 2 * crop_border}x{w - 2 * crop_border} pixels "
            f"of a {h}x{w} image; need at least {min_side}x{min_side}")


# ---------------------------------------------------------------- torch

def _y_torch(x: torch.Tensor, crop_border: int) -> torch.Tensor:
    """Quantized, cropped Y channel [B,1,h,w] float64 on [16, 235]."""
    q = x.detach().clamp(0, 1).mul(255).round().double()
    if crop_border:
        q = q[..., crop_border:-crop_border, crop_border:-crop_border]
    coeffs = torch.tensor(_Y_COEFFS, dtype=torch.float64, device=q.device).view(1, 3, 1, 1)
    return 16.0 + (q * coeffs).sum(1, keepdim=True) / 255.0


def _prepare(sr: torch.Tensor, hr: torch.Tensor, crop_border: int, min_side: int):
    for name, t in (("sr", sr), ("hr", hr)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() not in (3, 4) or t.shape[-3] != 3:
            raise ValueError(f"{name} must be an RGB tensor [B,3,H,W] or [3,H,W], got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a float tensor in [0, 1], got dtype {t.dtype} (divide an 8-bit image by 255)")
        lo, hi = (v.item() for v in t.detach().aminmax())
        if lo < -1 or hi > 2:
            raise ValueError(f"{name} must be a float image in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
                             "(divide an image on [0, 255] by 255)")
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr must have the same shape, got sr {tuple(sr.shape)} and hr {tuple(hr.shape)}")
    _check_crop(crop_border, sr.shape[-2], sr.shape[-1], min_side)
    if sr.dim() == 3:
        sr, hr = sr[None], hr[None]
    return _y_torch(sr, crop_border), _y_torch(hr, crop_border)


def psnr_y_per_image(sr: torch.Tensor, hr: torch.Tensor, crop_border: int) -> torch.Tensor:
    """PSNR on Y per image, float64 ``[B]`` (``inf`` where the quantized images are equal)."""
    y1, y2 = _prepare(sr, hr, crop_border, 1)
    mse = (y1 - y2).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0 ** 2 / mse)  # mse == 0 -> inf


def ssim_y_per_image(sr: torch.Tensor, hr: torch.Tensor, crop_border: int) -> torch.Tensor:
    """SSIM on Y per image, float64 ``[B]`` (11x11 Gaussian sigma 1.5, valid region)."""
    y1, y2 = _prepare(sr, hr, crop_border, _WIN)
    g = torch.from_numpy(_gaussian_1d()).to(y1.device)
    window = torch.outer(g, g).view(1, 1, _WIN, _WIN)
    mu1, mu2 = F.conv2d(y1, window), F.conv2d(y2, window)
    s11 = F.conv2d(y1 * y1, window) - mu1 * mu1
    s22 = F.conv2d(y2 * y2, window) - mu2 * mu2
    s12 = F.conv2d(y1 * y2, window) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + _C1) * (2 * s12 + _C2)) / ((mu1 * mu1 + mu2 * mu2 + _C1) * (s11 + s22 + _C2))
    return ssim_map.mean(dim=(1, 2, 3))


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, crop_border: int) -> float:
    """Mean over the batch of :func:`psnr_y_per_image`."""
    return psnr_y_per_image(sr, hr, crop_border).mean().item()


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, crop_border: int) -> float:
    """Mean over the batch of :func:`ssim_y_per_image`."""
    return ssim_y_per_image(sr, hr, crop_border).mean().item()


# ---------------------------------------------------------------- numpy twins

def _prepare_np(img, img2, crop_border: int, input_order: str, test_y_channel: bool, min_side: int):
    """BasicSR's steps: reorder to HWC (2-D -> HxWx1), crop, Y from BGR if asked, float64."""
    img, img2 = np.asarray(img), np.asarray(img2)
    if img.shape != img2.shape:
        raise ValueError(f"img and img2 must have the same shape, got img {img.shape} and img2 {img2.shape}")
    if input_order not in ("HWC", "CHW"):
        raise ValueError(f"input_order must be 'HWC' or 'CHW', got {input_order!r}")
    if img.ndim not in (2, 3):
        raise ValueError(f"img must be an HxW, HxWxC or CxHxW array, got shape {img.shape}")
    out = []
    for a in (img, img2):
        a = a[..., None] if a.ndim == 2 else a.transpose(1, 2, 0) if input_order == "CHW" else a
        _check_crop(crop_border, a.shape[0], a.shape[1], min_side)
        a = a.astype(np.float64)
        if crop_border:
            a = a[crop_border:-crop_border, crop_border:-crop_border]
        if test_y_channel and a.shape[2] == 3:
            a = (16.0 + a @ np.array(_Y_COEFFS[::-1]) / 255.0)[..., None]  # BGR order
        out.append(a)
    return out


def calculate_psnr(img, img2, crop_border: int, input_order: str = "HWC", test_y_channel: bool = False) -> float:
    """PSNR of BGR images on [0, 255], as BasicSR's ``calculate_psnr`` (see the module docstring)."""
    a, b = _prepare_np(img, img2, crop_border, input_order, test_y_channel, 1)
    mse = np.mean((a - b) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D array with the 1-D kernel ``g`` on both axes."""
    win = np.lib.stride_tricks.sliding_window_view
    return win(win(x, len(g), axis=0) @ g, len(g), axis=1) @ g


def calculate_ssim(img, img2, crop_border: int, input_order: str = "HWC", test_y_channel: bool = False) -> float:
    """SSIM of BGR images on [0, 255], as BasicSR's ``calculate_ssim``: per channel, then the mean."""
    a, b = _prepare_np(img, img2, crop_border, input_order, test_y_channel, _WIN)
    g = _gaussian_1d()
    values = []
    for c in range(a.shape[2]):
        x, y = a[..., c], b[..., c]
        mu1, mu2 = _filter_valid(x, g), _filter_valid(y, g)
        s11 = _filter_valid(x * x, g) - mu1 ** 2
        s22 = _filter_valid(y * y, g) - mu2 ** 2
        s12 = _filter_valid(x * y, g) - mu1 * mu2
        ssim_map = ((2 * mu1 * mu2 + _C1) * (2 * s12 + _C2)) / ((mu1 ** 2 + mu2 ** 2 + _C1) * (s11 + s22 + _C2))
        values.append(ssim_map.mean())
    return float(np.mean(values))
