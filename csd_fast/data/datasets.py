"""SR datasets: items are ``(lr, hr)`` float tensors ``[3,h,w]``, ``[3,s*h,s*w]`` in [0, 1].

Every dataset is a list of HR images, each with an LR partner that is either given (a file
or tensor) or generated once per image as ``to_uint8(bicubic_downscale(hr, scale))``
(MATLAB bicubic, quantized to 8 bit like the LR PNGs of DIV2K). HR is mod-cropped to a
multiple of ``scale`` (:func:`mod_crop`: bottom/right rows and columns dropped).

* ``patch_size=None``: whole images, no augmentation (validation / benchmarks).
* ``patch_size=P`` (HR side, divisible by ``scale``): an LR patch of ``P/scale`` at a
  uniformly random position and the HR patch under it; with ``augment`` a random
  horizontal flip, vertical flip and transpose (the 8 dihedral transforms), applied to
  both. Randomness comes from torch's generator (DataLoader workers get distinct seeds).

Images are held as uint8. ``cache=True`` decodes every file at construction and keeps every
HR (3·H·W bytes) and LR (3·H·W/s² bytes) in memory: DIV2K train (800 images of ~2.8 MP)
costs ~6.7 GB for HR plus ~0.4 GB for x4 LR; DataLoader workers share it copy-on-write.
Corrupt or truncated files are then found up front: they are skipped with a warning naming
the file, or raise ``ValueError`` when ``strict=True``.
``cache=False`` decodes lazily: construction reads only the file headers (sizes; a missing or
non-image file is skipped or raised as above), and every item decodes its HR (and given LR)
file, so a corrupt file raises ``ImageReadError`` naming it when it is read. An LR that is not
given is then made per item from the HR region under the patch plus a margin of
``LR_MARGIN`` LR pixels (wider than the bicubic kernel's support): the same pixels as
downscaling the whole image, up to float rounding before the 8-bit quantization.
``cache=DIR`` (a folder) decodes lazily too, but each file only once: its pixels go to
``DIR/<key>.npy`` (uint8, the key from the file's path, size and modification time, written
atomically so worker processes can share the folder), and later reads memory-map it and touch
only the rows of the patch: no PNG decoding after the first epoch, with little memory.
Images given as tensors are always kept in memory.
"""
import hashlib
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from .imresize import bicubic_downscale, mod_crop
from .io import ImageReadError, image_size, list_images, load_image_uint8, to_uint8

__all__ = ["SRDataset", "PatchDataset", "HRFolder", "PairedFolder", "DIV2K", "BenchmarkSet", "dihedral"]

BENCHMARKS = ("Set5", "Set14", "B100", "Urban100", "Manga109")
_ALIASES = {"b100": ("B100", "BSD100", "BSDS100"), "bsd100": ("B100", "BSD100", "BSDS100")}
LR_MARGIN = 4  # LR pixels: MATLAB bicubic at 1/s reads HR pixels within 2 LR pixels of a centre


def _check_int(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _as_uint8(src, what: str) -> torch.Tensor:
    """uint8 ``[3,H,W]`` from a path (decoded) or a tensor (float [0,1] quantized, uint8 kept)."""
    if isinstance(src, (str, Path)):
        return load_image_uint8(src)
    if not isinstance(src, torch.Tensor) or src.dim() != 3 or src.shape[0] != 3:
        got = f"shape {tuple(src.shape)}" if isinstance(src, torch.Tensor) else type(src).__name__
        raise ValueError(f"{what} must be a path or a tensor [3,H,W], got {got}")
    return src if src.dtype == torch.uint8 else to_uint8(src)


class SRDataset(Dataset):
    """``(lr, hr)`` pairs from ``pairs = [(name, hr, lr_or_None), ...]`` (paths or tensors).

    See the module docstring for patches, augmentation, caching and bad files.
    ``names`` lists the images kept, in order.
    """

    def __init__(self, pairs, scale: int, patch_size: int | None = None, augment: bool = True,
                 repeat: int = 1, cache: bool | str | Path = True, strict: bool = False, progress: bool = True):
        _check_int("scale", scale)
        if not isinstance(cache, (bool, str, Path)):
            raise TypeError(f"cache: expected True, False or a folder path, got {type(cache).__name__}")
        self.cache_dir = None if isinstance(cache, bool) else Path(cache)
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            cache = False
        _check_int("repeat", repeat)
        if patch_size is not None:
            _check_int("patch_size", patch_size)
            if patch_size % scale:
                raise ValueError(f"patch_size (HR side) must be divisible by scale={scale}, got {patch_size}")
        self.scale, self.patch_size, self.repeat = scale, patch_size, repeat
        self.augment = augment and patch_size is not None
        self.names, self._hr, self._lr, self._hw = [], [], [], []
        for name, hr_src, lr_src in tqdm(pairs, desc="loading images", disable=not progress, leave=False):
            lazy_hr, lazy_lr = (not cache and isinstance(src, (str, Path)) for src in (hr_src, lr_src))
            try:
                hr = Path(hr_src) if lazy_hr else mod_crop(_as_uint8(hr_src, f"HR image {name!r}"), scale)
                lr = None if lr_src is None else Path(lr_src) if lazy_lr else _as_uint8(lr_src, f"LR image {name!r}")
                hw = _mod(image_size(hr), scale) if lazy_hr else tuple(hr.shape[1:])
                self._check_sizes(name, hw, None if lr is None else _size(lr))
            except ImageReadError as e:
                if strict:
                    raise
                warnings.warn(f"skipping {name!r}: {e}", stacklevel=2)
                continue
            if lr is None and not lazy_hr:
                lr = to_uint8(bicubic_downscale(hr.float() / 255, scale))
            self.names.append(name)
            self._hr.append(hr)
            self._lr.append(lr)  # None: made per item from the (lazily decoded) HR
            self._hw.append(hw)
        if not self.names:
            raise ValueError("no readable images left in the dataset (see the warnings above)")

    def _check_sizes(self, name, hw, lr_hw):
        h, w = hw
        if lr_hw is not None and tuple(lr_hw) != (h // self.scale, w // self.scale):
            raise ValueError(f"LR image of {name!r} is {tuple(lr_hw)}, expected HR {(h, w)} "
                             f"(mod-cropped) / scale {self.scale} = {(h // self.scale, w // self.scale)}")
        if self.patch_size is not None and min(h, w) < self.patch_size:
            raise ValueError(f"image {name!r} is {h}x{w} after mod-crop, smaller than patch_size={self.patch_size}")

    def __len__(self) -> int:
        return len(self.names) * self.repeat

    def _image(self, item, h: int, w: int) -> torch.Tensor:
        """A stored uint8 image, or the file (decoded, or mapped from the cache folder) cropped to ``h x w``."""
        if not isinstance(item, Path):
            return item
        img = load_image_uint8(item) if self.cache_dir is None else _decoded_once(item, self.cache_dir)
        return img[:, :h, :w]

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)}")
        k, s = index % len(self.names), self.scale
        h, w = self._hw[k]
        hr = self._image(self._hr[k], h, w)
        y, x, ph, pw = 0, 0, h // s, w // s  # the LR window: the whole image, or a random patch
        if self.patch_size is not None:
            ph = pw = self.patch_size // s
            y = int(torch.randint(h // s - ph + 1, ()))
            x = int(torch.randint(w // s - pw + 1, ()))
        if self._lr[k] is None:
            lr = _downscaled_patch(hr, s, y, x, ph, pw)
        else:
            lr = self._image(self._lr[k], h // s, w // s)[:, y:y + ph, x:x + pw]
        hr = hr[:, y * s:(y + ph) * s, x * s:(x + pw) * s]
        if self.augment:
            hflip, vflip, transpose = (torch.rand(3) < 0.5).tolist()
            lr, hr = (dihedral(t, hflip, vflip, transpose) for t in (lr, hr))
        return lr.float() / 255, hr.float() / 255


def _decoded_once(path: Path, folder: Path) -> torch.Tensor:
    """``load_image_uint8(path)`` through the cache ``folder`` (module docstring): a [3, H, W] view of
    a copy-on-write memory map, so only the rows used are read."""
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
    cached = folder / f"{key}.npy"
    if not cached.exists():
        tmp = folder / f"{key}.{os.getpid()}.tmp.npy"
        np.save(tmp, load_image_uint8(path).permute(1, 2, 0).numpy())
        os.replace(tmp, cached)
    return torch.from_numpy(np.load(cached, mmap_mode="c")).permute(2, 0, 1)


def _mod(hw: tuple[int, int], scale: int) -> tuple[int, int]:
    return hw[0] - hw[0] % scale, hw[1] - hw[1] % scale


def _size(src) -> tuple[int, int]:
    return image_size(src) if isinstance(src, Path) else tuple(src.shape[1:])


def _downscaled_patch(hr: torch.Tensor, s: int, y: int, x: int, ph: int, pw: int) -> torch.Tensor:
    """LR rows ``y:y+ph``, columns ``x:x+pw`` of ``to_uint8(bicubic_downscale(hr, s))`` (uint8 ``hr``),
    computed from the HR region under them plus ``LR_MARGIN`` LR pixels (clipped at the borders,
    where the crop's mirror padding is the image's own)."""
    h, w = hr.shape[1] // s, hr.shape[2] // s
    y0, x0 = max(0, y - LR_MARGIN), max(0, x - LR_MARGIN)
    y1, x1 = min(h, y + ph + LR_MARGIN), min(w, x + pw + LR_MARGIN)
    lr = to_uint8(bicubic_downscale(hr[:, y0 * s:y1 * s, x0 * s:x1 * s].float() / 255, s))
    return lr[:, y - y0:y - y0 + ph, x - x0:x - x0 + pw]


def dihedral(img: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    """One of the 8 dihedral transforms of ``[..., H, W]`` (flip W, flip H, then swap H/W)."""
    if hflip:
        img = img.flip(-1)
    if vflip:
        img = img.flip(-2)
    if transpose:
        img = img.transpose(-2, -1)
    return img.contiguous()


class PatchDataset(SRDataset):
    """Random training patches from HR images given as tensors ``[3,H,W]`` or paths.

    Float tensors are quantized to 8 bit (as if saved to PNG). ``lr_images``, when given,
    pairs with ``hr_images`` one to one; otherwise LR is generated once per image.
    """

    def __init__(self, hr_images, scale: int, patch_size: int, augment: bool = True, repeat: int = 1,
                 lr_images=None, cache: bool | str | Path = True, strict: bool = False, progress: bool = False):
        hr_images = list(hr_images)
        lr_images = [None] * len(hr_images) if lr_images is None else list(lr_images)
        if len(lr_images) != len(hr_images):
            raise ValueError(f"lr_images must have one image per HR image ({len(hr_images)}), got {len(lr_images)}")
        if patch_size is None:
            raise ValueError("patch_size must be an int (HR side), got None; use HRFolder for whole images")
        names = [Path(h).name if isinstance(h, (str, Path)) else f"image {i}" for i, h in enumerate(hr_images)]
        super().__init__(list(zip(names, hr_images, lr_images)), scale, patch_size, augment, repeat,
                         cache, strict, progress)


def _pair_key(stem: str, scale: int) -> str:
    """Stem without an EDSR/BasicSR/RCAN scale tag: '0001x4', 'baby_LRBI_x4', 'baby_HR_x4' -> base."""
    return re.sub(rf"[_-]?(?:HR|LRBI|LR)?[_-]?[xX]{scale}$", "", stem)


def _folder_pairs(hr_dir, lr_dir, scale: int):
    """``(name, hr_path, lr_path_or_None)`` for every HR file; LR matched by stem when ``lr_dir``."""
    _check_int("scale", scale)
    hr_files = list_images(hr_dir)
    if lr_dir is None:
        return [(p.name, p, None) for p in hr_files]
    lr_by_key = {}
    for p in list_images(lr_dir):
        key = _pair_key(p.stem, scale)
        if key in lr_by_key:
            raise ValueError(f"LR files {lr_by_key[key].name} and {p.name} in {lr_dir} both match HR stem {key!r}")
        lr_by_key[key] = p
    pairs, unmatched_hr = [], []
    for p in hr_files:
        lr = lr_by_key.pop(_pair_key(p.stem, scale), None)
        if lr is None:
            unmatched_hr.append(p.name)
        else:
            pairs.append((p.name, p, lr))
    if unmatched_hr or lr_by_key:
        unmatched_lr = sorted(q.name for q in lr_by_key.values())
        raise ValueError(f"HR/LR files do not pair up by stem (LR may add 'x{scale}'): "
                         f"HR without LR in {hr_dir}: {_first(unmatched_hr)}; "
                         f"LR without HR in {lr_dir}: {_first(unmatched_lr)}")
    return pairs


def _first(names: list[str], n: int = 10) -> str:
    return f"{names[:n]}{f' and {len(names) - n} more' if len(names) > n else ''}"


class HRFolder(SRDataset):
    """All images of an HR folder; LR generated. ``patch_size=None``: whole mod-cropped images."""

    def __init__(self, path, scale: int, patch_size: int | None = None, augment: bool = True, repeat: int = 1,
                 cache: bool | str | Path = True, strict: bool = False, progress: bool = True):
        super().__init__(_folder_pairs(path, None, scale), scale, patch_size, augment, repeat,
                         cache, strict, progress)


class PairedFolder(SRDataset):
    """HR and LR folders paired by file stem (``0001.png`` <-> ``0001x4.png`` or ``0001.png``).

    Raises ``ValueError`` listing the files left unpaired on either side.
    """

    def __init__(self, hr_dir, lr_dir, scale: int, patch_size: int | None = None, augment: bool = True,
                 repeat: int = 1, cache: bool | str | Path = True, strict: bool = False, progress: bool = True):
        super().__init__(_folder_pairs(hr_dir, lr_dir, scale), scale, patch_size, augment, repeat,
                         cache, strict, progress)


class DIV2K(SRDataset):
    """DIV2K in its standard layout under ``root``::

        DIV2K_{train,valid}_HR/0001.png
        DIV2K_{train,valid}_LR_bicubic/X{scale}/0001x{scale}.png   (optional; else generated)

    ``patch_size=None`` means 48·scale HR patches (EDSR/CSD's 48x48 LR patches) for
    ``split="train"`` and whole images for ``split="valid"``.
    """

    def __init__(self, root, split: str = "train", scale: int = 4, patch_size: int | None = None,
                 augment: bool = True, repeat: int = 1, cache: bool | str | Path = True, strict: bool = False,
                 progress: bool = True):
        if split not in ("train", "valid"):
            raise ValueError(f"split must be 'train' or 'valid', got {split!r}")
        root = Path(root)
        hr_dir = root / f"DIV2K_{split}_HR"
        if not hr_dir.is_dir():
            raise ValueError(f"DIV2K HR folder {hr_dir} not found (expected root/DIV2K_{split}_HR/*.png)")
        lr_dir = root / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
        if patch_size is None and split == "train":
            patch_size = 48 * scale
        super().__init__(_folder_pairs(hr_dir, lr_dir if lr_dir.is_dir() else None, scale), scale,
                         patch_size, augment, repeat, cache, strict, progress)


def _find_set(root: Path, name: str) -> Path:
    candidates = _ALIASES.get(name.lower(), (name,))
    folders = {p.name.lower(): p for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
    for cand in candidates:
        if cand.lower() in folders:
            return folders[cand.lower()]
    raise ValueError(f"benchmark {name!r} not found under {root}: looked for folders {list(candidates)} "
                     f"(standard sets: {', '.join(BENCHMARKS)}; B100 is also found as BSD100)")


class BenchmarkSet(SRDataset):
    """A test set (Set5, Set14, B100/BSD100, Urban100, Manga109, or any folder laid out alike)
    as whole images. Layouts tried under ``root/name``, in order:

    1. ``HR/*.png`` with optional ``LR_bicubic/X{scale}/`` (EDSR benchmark layout);
    2. ``GTmod12/*.png`` with optional ``LRbicx{scale}/`` (BasicSR layout);
    3. ``*.png`` directly (HR only).

    Missing LR is generated from the mod-cropped HR.
    """

    def __init__(self, root, name: str, scale: int, cache: bool | str | Path = True, strict: bool = False,
                 progress: bool = False):
        folder = _find_set(Path(root), name)
        for hr_sub, lr_sub in (("HR", f"LR_bicubic/X{scale}"), ("GTmod12", f"LRbicx{scale}")):
            if (folder / hr_sub).is_dir():
                hr_dir, lr_dir = folder / hr_sub, folder / lr_sub
                break
        else:
            hr_dir, lr_dir = folder, None
        pairs = _folder_pairs(hr_dir, lr_dir if lr_dir is not None and lr_dir.is_dir() else None, scale)
        super().__init__(pairs, scale, None, False, 1, cache, strict, progress)
        self.name = folder.name
