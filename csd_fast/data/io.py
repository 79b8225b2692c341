"""Image files <-> float RGB tensors ``[3,H,W]`` in [0, 1], via Pillow.

Reading (:func:`open_image`): the EXIF orientation is applied (``ImageOps.exif_transpose``), so
a photo comes out the way viewers show it; a file of several pages or frames (multi-page TIFF,
animated GIF/WebP) gives its first one, with a warning. Colour: pixel values are used as stored
and an embedded ICC profile is *not* applied (SR works on the stored values; converting to sRGB
would clip wide-gamut colours); ``csd-fast upscale`` carries the profile to its output instead
(see ``icc_profile_for``). Writing goes through ``csd_fast.fileio.atomic_write``.
"""
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..fileio import atomic_write

__all__ = [
    "IMAGE_EXTENSIONS", "ImageReadError", "open_image", "load_image", "load_image_uint8", "pil_to_tensor", "image_size",
    "save_image", "write_pil", "icc_profile_for", "list_images", "to_uint8",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ORIENTATION = 0x0112  # the EXIF orientation tag
# JPEG without chroma subsampling (4:2:0 would average the colours of each 2x2 block: visibly wrong
# colours on small images and fine detail); WebP lossless (lossy WebP always subsamples chroma).
SAVE_OPTIONS = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"lossless": True}}


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


def open_image(path) -> Image.Image:
    """The decoded first page/frame of an image file, EXIF orientation applied (see the module
    docstring); ``info`` keeps the file's ``icc_profile``. Raises :class:`ImageReadError`."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                warnings.warn(f"{path}: holds {frames} pages/frames; only the first is used", stacklevel=3)
            im.load()  # decode now: truncated data raises here, not later
            return ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"cannot read image file {path}: {e}") from e


def load_image(path) -> torch.Tensor:
    """Read an image file as float32 RGB ``[3,H,W]`` in [0, 1] (via :func:`open_image`).

    Grey becomes 3 equal channels, alpha is dropped, 16-bit greyscale is divided by 65535.
    Raises :class:`ImageReadError` (a ``ValueError``) naming the file when it is missing,
    unreadable, corrupt or truncated.
    """
    return pil_to_tensor(open_image(path)).contiguous()


def load_image_uint8(path) -> torch.Tensor:
    """``to_uint8(load_image(path))`` without the float pass: uint8 RGB ``[3,H,W]`` (a view of
    H x W x 3 memory). 8-bit files give their stored values."""
    return pil_to_tensor(open_image(path), uint8=True)


def pil_to_tensor(im: Image.Image, uint8: bool = False) -> torch.Tensor:
    """A decoded Pillow image as RGB ``[3,H,W]`` (a view of H x W x 3 memory): float32 in [0, 1],
    or uint8 with ``uint8`` (the rules of :func:`load_image`)."""
    return torch.from_numpy(_decode(im, uint8)).permute(2, 0, 1)


def image_size(path) -> tuple[int, int]:
    """``(H, W)`` of an image file as :func:`load_image` returns it (EXIF orientation applied), from
    its header, without decoding the pixels. Raises :class:`ImageReadError` naming the file when it
    is missing or not an image."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            turned = im.getexif().get(_ORIENTATION) in (5, 6, 7, 8)  # a quarter turn swaps the sides
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"cannot read image file {path}: {e}") from e
    return (w, h) if turned else (h, w)


def icc_profile_for(im: Image.Image, grey: bool, source) -> bytes | None:
    """The ICC profile of ``im`` to embed in an output made from its stored values: kept when its
    colour space (ICC header bytes 16-19) is the output's (RGB, or GRAY for a grey output); else
    (e.g. a CMYK profile after Pillow's plain CMYK -> RGB conversion) dropped with a warning."""
    icc = im.info.get("icc_profile")
    if not icc:
        return None
    space, wanted = bytes(icc[16:20]).decode("latin-1").strip(), "GRAY" if grey else "RGB"
    if space != wanted:
        warnings.warn(f"{source}: its {space} ICC profile does not fit the "
                      f"{wanted} output and is dropped; colours are converted without it", stacklevel=2)
        return None
    return icc


def write_pil(im: Image.Image, path, **options) -> Path:
    """Save a Pillow image atomically in the format of ``path``'s suffix, with ``SAVE_OPTIONS``
    (e.g. ``icc_profile=...`` in ``options``). Parent folders are created."""
    path = Path(path)
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"path must end in one of {sorted(_SAVE_FORMATS)}, got {str(path)!r}")
    with atomic_write(path) as f:
        im.save(f, fmt, **SAVE_OPTIONS.get(fmt, {}), **options)
    return path


def save_image(img: torch.Tensor, path) -> Path:
    """Write ``[3,H,W]`` (or ``[1,3,H,W]``) in [0, 1] as 8 bit; format from the suffix
    (png, jpg/jpeg at quality 95 without chroma subsampling, bmp, tif, lossless webp). Parent
    folders are created; written atomically."""
    if img.dim() == 4 and img.shape[0] == 1:
        img = img[0]
    if img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"img must be [3,H,W] or [1,3,H,W], got shape {tuple(img.shape)}")
    return write_pil(Image.fromarray(to_uint8(img).permute(1, 2, 0).cpu().numpy(), "RGB"), path)


def list_images(folder) -> list[Path]:
    """Image files directly in ``folder`` (by extension, case-insensitive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"image folder {folder} has no images with extensions {IMAGE_EXTENSIONS}")
    return files
