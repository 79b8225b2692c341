"""Random degradations of LR batches: DCKD's degrading module (DCKD paper, "Dynamic Contrastive
Regularization", Eq. 4; its ablation Tab. 6 picks random noise).

Every function maps a float ``[B, 3, H, W]`` batch in [0, 1] to one of the same shape, clamped
to [0, 1], and draws from torch's global RNG (the trainer seeds it per step).

- ``add_gaussian_noise``: ``x + sigma * n``, sigma ~ U[1, 30] / 255 per image; with probability
  ``gray_prob`` per image the noise is grey: one [H, W] field shared by the three channels and by
  every grey image of the batch (each scaled by its own sigma), exactly as BasicSR's
  ``random_add_gaussian_noise_pt`` used by the official DCKD code, in the same draw order.
- ``gaussian_blur``: separable Gaussian per image, odd kernel size in [3, 11], sigma_x and sigma_y
  ~ U[0.1, 2] (the official code's ranges), reflect padding.
- ``random_resize``: resize the whole batch by one factor (x U[1, 1.5] with probability 0.25,
  else x U[0.5, 1]) and back to its size, each with a random mode of area/bilinear/bicubic.

DCKD's teacher augmentation (its ``noising``; not a degradation: it is undone on the output):
``draw_augmentations`` picks, per image and with probability ``prob`` each, colour inversion
(``1 - x``), a flip of the rows (H), a flip of the columns (W) and a transpose; ``augment``
applies them in that order and ``revert_augmentation`` undoes them in the reverse order.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

RESIZE_MODES = ("area", "bilinear", "bicubic")


def _uniform(n: int, low: float, high: float, device) -> Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


def _check_range(name: str, value: Sequence[float], low_bound: float) -> tuple[float, float]:
    low, high = value
    if not (low_bound <= low <= high):
        raise ValueError(f"{name}: expected (low, high) with {low_bound} <= low <= high, got {tuple(value)!r}")
    return float(low), float(high)


def add_gaussian_noise(x: Tensor, sigma_range=(1 / 255, 30 / 255), gray_prob: float = 0.5) -> Tensor:
    """``clamp(x + sigma_b * n_b)``, sigma_b ~ U[sigma_range]; grey noise (``n_b`` [1,H,W]) w.p. ``gray_prob``."""
    low, high = _check_range("sigma_range", sigma_range, 0.0)
    if not 0.0 <= gray_prob <= 1.0:
        raise ValueError(f"gray_prob: expected a probability in [0, 1], got {gray_prob!r}")
    b = x.shape[0]
    sigma = (torch.rand(b, device=x.device, dtype=x.dtype) * (high - low) + low).view(b, 1, 1, 1)
    gray = (torch.rand(b, device=x.device, dtype=x.dtype) < gray_prob).view(b, 1, 1, 1)
    # BasicSR draws the grey field only when some image is grey, before the colour noise.
    gray_field = torch.randn(x.shape[-2:], device=x.device, dtype=x.dtype) if gray.any() else None
    noise = torch.randn_like(x)
    if gray_field is not None:
        noise = torch.where(gray, gray_field.expand_as(x), noise)
    return (x + sigma * noise).clamp_(0, 1)


def _gaussian_kernels(sigma: Tensor, sizes: Tensor, max_size: int) -> Tensor:
    """[B, max_size] normalized 1-D Gaussians of odd length ``sizes[b]``, zero-padded to ``max_size``."""
    r = torch.arange(max_size, device=sigma.device, dtype=sigma.dtype) - max_size // 2
    k = torch.exp(-0.5 * (r / sigma[:, None]) ** 2)
    k = k * (r.abs()[None] <= (sizes[:, None] // 2))
    return k / k.sum(1, keepdim=True)


def gaussian_blur(x: Tensor, kernel_range=(3, 11), sigma_range=(0.1, 2.0)) -> Tensor:
    """Per-image separable Gaussian blur: odd size in ``kernel_range``, sigma_x, sigma_y ~ U[sigma_range]."""
    kmin, kmax = (int(v) for v in _check_range("kernel_range", kernel_range, 1))
    if kmin % 2 == 0 or kmax % 2 == 0:
        raise ValueError(f"kernel_range: expected odd sizes, got {tuple(kernel_range)!r}")
    low, high = _check_range("sigma_range", sigma_range, 1e-6)
    b, c, h, w = x.shape
    pad = kmax // 2
    if pad >= min(h, w):
        raise ValueError(f"x: blur with kernels up to {kmax} needs H, W > {pad}, got shape {tuple(x.shape)}")
    sizes = torch.randint(kmin // 2, kmax // 2 + 1, (b,), device=x.device) * 2 + 1
    kx = _gaussian_kernels(_uniform(b, low, high, x.device), sizes, kmax).repeat_interleave(c, 0)
    ky = _gaussian_kernels(_uniform(b, low, high, x.device), sizes, kmax).repeat_interleave(c, 0)
    y = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, kx.view(b * c, 1, 1, kmax).to(x.dtype), groups=b * c)
    y = F.conv2d(y, ky.view(b * c, 1, kmax, 1).to(x.dtype), groups=b * c)
    return y.view(b, c, h, w).clamp_(0, 1)


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    mode = RESIZE_MODES[int(torch.randint(len(RESIZE_MODES), ()))]
    return F.interpolate(x, size=size, mode=mode, align_corners=None if mode == "area" else False)


def random_resize(x: Tensor, up_prob: float = 0.25, up_range=(1.0, 1.5), down_range=(0.5, 1.0)) -> Tensor:
    """Resize the batch by one factor (~U[up_range] w.p. ``up_prob``, else ~U[down_range]) and back, random modes."""
    up = _check_range("up_range", up_range, 1e-3)
    down = _check_range("down_range", down_range, 1e-3)
    if not 0.0 <= up_prob <= 1.0:
        raise ValueError(f"up_prob: expected a probability in [0, 1], got {up_prob!r}")
    low, high = up if torch.rand(()) < up_prob else down
    factor = float(torch.empty(()).uniform_(low, high))
    h, w = x.shape[-2:]
    small = _resize(x, (max(1, round(h * factor)), max(1, round(w * factor))))
    return _resize(small, (h, w)).clamp_(0, 1)


DEGRADATIONS = {"noise": add_gaussian_noise, "blur": gaussian_blur, "resize": random_resize}


def degrade(x: Tensor, kinds: Sequence[str] = ("noise",)) -> Tensor:
    """Apply the degradations named in ``kinds`` (keys of ``DEGRADATIONS``) in order, default settings."""
    if isinstance(kinds, str) or not kinds:
        raise ValueError(f"kinds: expected a non-empty sequence of {sorted(DEGRADATIONS)}, got {kinds!r}")
    for kind in kinds:
        if kind not in DEGRADATIONS:
            raise ValueError(f"kinds: expected names from {sorted(DEGRADATIONS)}, got {kind!r}")
        x = DEGRADATIONS[kind](x)
    return x


AUGMENTATIONS = ("invert", "flip_h", "flip_w", "transpose")


def draw_augmentations(batch: int, prob: float = 0.5, device=None) -> Tensor:
    """[4, batch] bool: which images get each of ``AUGMENTATIONS``, each with probability ``prob``."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob: expected a probability in [0, 1], got {prob!r}")
    return torch.rand(len(AUGMENTATIONS), batch, device=device) < prob


def _check_augmentable(x: Tensor, ops: Tensor) -> Tensor:
    if x.dim() != 4 or ops.shape != (len(AUGMENTATIONS), x.shape[0]):
        raise ValueError(
            f"ops: expected a [{len(AUGMENTATIONS)}, B] mask for a [B, C, H, W] batch, got {tuple(ops.shape)} "
            f"for {tuple(x.shape)}"
        )
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"x: the augmentations transpose images within a batch, expected square images, got shape {tuple(x.shape)}")
    return ops.to(x.device).view(len(AUGMENTATIONS), -1, 1, 1, 1)


def augment(x: Tensor, ops: Tensor, value_range: float = 1.0) -> Tensor:
    """Invert (``value_range - x``), flip H, flip W, transpose: each where ``ops`` says, in that order."""
    m = _check_augmentable(x, ops)
    x = torch.where(m[0], value_range - x, x)
    x = torch.where(m[1], x.flip(-2), x)
    x = torch.where(m[2], x.flip(-1), x)
    return torch.where(m[3], x.transpose(-2, -1), x)


def revert_augmentation(y: Tensor, ops: Tensor, value_range: float = 1.0) -> Tensor:
    """Undo ``augment(., ops)`` on ``y`` (e.g. a network's output): the four steps in reverse order."""
    m = _check_augmentable(y, ops)
    y = torch.where(m[3], y.transpose(-2, -1), y)
    y = torch.where(m[2], y.flip(-1), y)
    y = torch.where(m[1], y.flip(-2), y)
    return torch.where(m[0], value_range - y, y)
