"""Data: MATLAB bicubic resizing, image files, SR datasets, bundled photographs."""
from .imresize import bicubic_downscale, bicubic_upsample, imresize
from .io import list_images, load_image, save_image, to_uint8

__all__ = [
    "imresize", "bicubic_downscale", "bicubic_upsample",
    "load_image", "save_image", "list_images", "to_uint8",
]
