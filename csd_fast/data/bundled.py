"""Real photographs shipped inside the scikit-image wheel (``skimage/data``), read from disk.

Nothing is downloaded: the files are read straight from the installed package folder
(``skimage.data`` fetchers could try pooch downloads for other names). Synthetic images
(chessboards, color wheel, logo, phantom, horse silhouette), the motion-blurred clock, the
near-duplicate right stereo view and the 102 px microaneurysms crop are left out.

The split is fixed: four varied colour photographs are held out for testing (a portrait,
an animal, a still life, an outdoor scene); the other thirteen (colour and grey, natural
textures, microscopy, astronomy, text) are for training.
"""
import importlib.util
import math
from pathlib import Path

import torch

from ..optional import missing
from .imresize import imresize
from .io import load_image

__all__ = ["BUNDLED_TRAIN", "BUNDLED_TEST", "bundled_dir", "bundled_images"]

BUNDLED_TEST = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
BUNDLED_TRAIN = (
    "brick.png", "camera.png", "cell.png", "coins.png", "grass.png", "gravel.png",
    "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "page.png",
    "retina.jpg", "text.png",
)


def bundled_dir() -> Path:
    """The ``skimage/data`` folder of the installed scikit-image (without importing it)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise missing("skimage", "the bundled photographs")
    return Path(spec.origin).parent / "data"


def bundled_images(split: str = "train", max_side: int | None = None) -> list[tuple[str, torch.Tensor]]:
    """``[(name, hr)]`` with ``hr`` float ``[3,H,W]`` in [0, 1], grey images as 3 channels.

    ``max_side``: images whose longer side exceeds it are shrunk with MATLAB bicubic
    (aspect kept, result clamped to [0, 1]); ``None`` keeps the original sizes.
    """
    files = {"train": BUNDLED_TRAIN, "test": BUNDLED_TEST}.get(split)
    if files is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if max_side is not None and (not isinstance(max_side, int) or max_side < 1):
        raise ValueError(f"max_side must be a positive int or None, got {max_side!r}")
    folder = bundled_dir()
    out = []
    for name in files:
        img = load_image(folder / name)
        h, w = img.shape[1:]
        if max_side is not None and max(h, w) > max_side:
            f = max_side / max(h, w)
            size = (min(max_side, math.ceil(h * f)), min(max_side, math.ceil(w * f)))
            img = imresize(img, size=size).clamp(0, 1)
        out.append((Path(name).stem, img))
    return out
