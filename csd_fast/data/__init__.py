"""Data: MATLAB bicubic resizing, image files, SR datasets, bundled photographs."""
from .bundled import BUNDLED_TEST, BUNDLED_TRAIN, bundled_images
from .datasets import DIV2K, BenchmarkSet, HRFolder, PairedFolder, PatchDataset, SRDataset, dihedral
from .imresize import bicubic_downscale, bicubic_upsample, imresize, mod_crop
from .io import ImageReadError, image_size, list_images, load_image, load_image_uint8, save_image, to_uint8

__all__ = [
    "imresize", "mod_crop", "bicubic_downscale", "bicubic_upsample",
    "ImageReadError", "load_image", "load_image_uint8", "image_size", "save_image", "list_images", "to_uint8",
    "SRDataset", "PatchDataset", "HRFolder", "PairedFolder", "DIV2K", "BenchmarkSet", "dihedral",
    "bundled_images", "BUNDLED_TRAIN", "BUNDLED_TEST",
]
