"""Frozen VGG19 trunk returning the five CSD taps relu1_1 ... relu5_1.

Layer indices follow torchvision's ``vgg19().features`` so its state dict
(``vgg19-dcbb9e9d.pth``, keys ``features.N.weight``) loads as is; the trunk stops at relu5_1
(index 29). The taps are the official CSD slices [0:2], [2:7], [7:12], [12:21], [21:30].

Input convention (``vgg_input``), for images x in [0, 1]:
- ``"official"`` (default): ``x * 255``, raw RGB on the 8-bit scale with no normalization, as the
  official CSD loss feeds its [0, 255] network outputs; lambda_C = 200 was tuned for it.
- ``"imagenet"``: ``(x - mean) / std`` with the ImageNet mean/std (what torchvision's VGG19 was
  trained on; BasicSR's perceptual-loss convention).

No network: weights come from a path, or torch's hub cache if the file is already there;
otherwise a fixed-seed random VGG19 is used with a loud warning.
"""
from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor, nn

VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
TAP_NAMES = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
TAP_ENDS = (2, 7, 12, 21, 30)  # slice ends in torchvision's features indices
TAP_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_INPUTS = ("official", "imagenet")


def _features() -> nn.Sequential:
    layers, c = [], 3
    for v in VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(*layers[: TAP_ENDS[-1]])


def default_weights_path() -> str | None:
    """torchvision's VGG19 file in torch's hub cache, if it is there (never downloaded)."""
    path = os.path.join(torch.hub.get_dir(), "checkpoints", TORCHVISION_FILE)
    return path if os.path.isfile(path) else None


def load_vgg_state(path: str) -> dict:
    """The ``features.*`` tensors up to relu5_1 from a torchvision-format file (safe load)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"vgg_weights: could not read {path!r} as a torchvision VGG19 state dict: {err}") from err
    keep = {f"features.{k}" for k in _features().state_dict()}
    found = {k: v for k, v in state.items() if k in keep}
    missing = sorted(keep - set(found), key=lambda k: int(k.split(".")[1]))
    if missing:
        raise ValueError(f"vgg_weights: {path!r} is not a VGG19 features state dict; missing {missing[:4]}...")
    return found


class VGG19Taps(nn.Module):
    """``forward(x) -> [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1]`` for x in [0, 1], fed to the
    trunk as ``vgg_input`` says (module docstring)."""

    def __init__(self, weights: str | None = None, seed: int = 0, vgg_input: str = "official"):
        super().__init__()
        if vgg_input not in VGG_INPUTS:
            raise ValueError(f"vgg_input: expected one of {VGG_INPUTS}, got {vgg_input!r}")
        self.vgg_input = vgg_input
        self.features = _features()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        path = weights or default_weights_path()
        if path is not None:
            self.load_state_dict(load_vgg_state(path), strict=False)
            self.pretrained = True
        else:
            self._random_init(seed)
            self.pretrained = False
            warnings.warn(
                "VGG19 weights not found (pass vgg_weights=PATH to torchvision's vgg19-dcbb9e9d.pth, "
                "or put it in torch's hub cache): using a fixed-seed RANDOM VGG19. The contrastive "
                "loss still works, but results will not match the paper.",
                UserWarning,
                stacklevel=2,
            )
        self.requires_grad_(False).eval()

    def _random_init(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * 9
                with torch.no_grad():
                    m.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=gen)
                    m.bias.zero_()

    def train(self, mode: bool = True):
        return super().train(False)  # always frozen, eval mode

    def forward(self, x: Tensor) -> list[Tensor]:
        if self.vgg_input == "official":
            h = x * 255.0
        else:
            h = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        taps, start = [], 0
        for end in TAP_ENDS:
            for layer in self.features[start:end]:
                h = layer(h)
            taps.append(h)
            start = end
        return taps
