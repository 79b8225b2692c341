"""Image files <-> float RGB tensors ``[3,H,W]`` in [0, 1], via Pillow."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS", "ImageReadError", "load_image", "load_image_uint8", "image_size", "save_image", "list_images",
    "to_uint8",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageReadError(ValueError):
    """An image file is missing, unreadable, corrupt or truncated; the message names it."""


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """8-bit quantization used everywhere: ``round(clamp(img, 0, 1) * 255)`` as uint8."""
    return img.detach().clamp(0, 1).mul(255).round().to(torch.uint8)


def _decode(im: Image.Image, uint8: bool) -> np.ndarray:
    """HxWx3 array from a loaded Pillow image: float32 on [0, 1], or its ``to_uint8`` when ``uint8``
    (8-bit files are then read as they are, with no float pass)."""
    if im.mode in _SIXTEEN_BIT_MODES:  # 16-bit greyscale (Pillow opens 16-bit PNGs as I;16 or I)
        grey = np.clip(np.asarray(im, dtype=np.float32) / 65535.0, 0, 1)
        if uint8:
            grey = np.round(grey * 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode == "F":
        raise ImageReadError(f"cannot read image file {im.filename}: float mode 'F' has no known range")
    # RGBA/LA/PA: alpha dropped (not composited); L/1/P/CMYK/YCbCr: converted to RGB
    rgb = np.array(im.convert("RGB"))  # a writable copy (Pillow's buffer is read-only)
    return rgb if uint8 else rgb.astype(np.float32) / 255.0


def _read(path, uint8: bool) -> torch.Tensor:
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode now: truncated data raises here, not later
            arr = _decode(im, uint8)
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"cannot read image file {path}: {e}") from e
    return torch.from_numpy(arr).permute(2, 0, 1)


def load_image(path) -> torch.Tensor:
    """Read an image file as float32 RGB ``[3,H,W]`` in [0, 1].

    Grey becomes 3 equal channels, alpha is dropped, 16-bit greyscale is divided by 65535.
    Raises :class:`ImageReadError` (a ``ValueError``) naming the file when it is missing,
    unreadable, corrupt or truncated.
    """
    return _read(path, uint8=False).contiguous()


def load_image_uint8(path) -> torch.Tensor:
    """``to_uint8(load_image(path))`` without the float pass: uint8 RGB ``[3,H,W]`` (a view of
    H x W x 3 memory). 8-bit files give their stored values."""
    return _read(path, uint8=True)


def image_size(path) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header, without decoding the pixels. Raises
    :class:`ImageReadError` naming the file when it is missing or not an image."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"cannot read image file {path}: {e}") from e
    return h, w


def save_image(img: torch.Tensor, path) -> Path:
    """Write ``[3,H,W]`` (or ``[1,3,H,W]``) in [0, 1] as 8 bit; format from the suffix
    (png, jpg/jpeg at quality 95, bmp, tif, webp). Parent folders are created."""
    path = Path(path)
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"path must end in one of {sorted(_SAVE_FORMATS)}, got {str(path)!r}")
    if img.dim() == 4 and img.shape[0] == 1:
        img = img[0]
    if img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"img must be [3,H,W] or [1,3,H,W], got shape {tuple(img.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(img).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr, "RGB").save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


def list_images(folder) -> list[Path]:
    """Image files directly in ``folder`` (by extension, case-insensitive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"image folder {folder} has no images with extensions {IMAGE_EXTENSIONS}")
    return files
