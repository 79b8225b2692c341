"""``csd-fast upscale``: super-resolve image files and folders.

Colour channels go through the network; an alpha channel (RGBA, LA, palette transparency) is
resized with MATLAB bicubic; greyscale input is run as three equal channels and written back as
greyscale (the mean of the output channels). Output is 8 bit, in the input's format; JPEG cannot
hold alpha, so it is dropped there with a warning. Unreadable files are skipped with a warning
naming them (exit status 1), or stop the run with ``--strict``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data import imresize, list_images, load_image, to_uint8
from ..data.io import IMAGE_EXTENSIONS, ImageReadError
from ..inference import upscale_tensor
from ..student_io import load_model
from .common import accelerated, fast_options, model_hints, network_at, resolve_device

_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N")


def read_alpha_and_mode(path: Path) -> tuple[torch.Tensor | None, bool]:
    """The alpha channel as float ``[1,H,W]`` (None if opaque) and whether the image is greyscale."""
    with Image.open(path) as im:
        grey = im.mode in _GREY_MODES
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        if "A" not in im.getbands():
            return None, grey
        alpha = np.asarray(im.getchannel("A"), dtype=np.float32) / 255.0
    return torch.from_numpy(alpha)[None], grey


def write_output(rgb: torch.Tensor, alpha: torch.Tensor | None, grey: bool, path: Path) -> None:
    """Write ``[3,H,W]`` (+ alpha ``[1,H,W]``) in [0, 1] as 8 bit; greyscale as one channel."""
    channels = [rgb.mean(0, keepdim=True)] if grey else [rgb]
    if alpha is not None and path.suffix.lower() in (".jpg", ".jpeg"):
        warnings.warn(f"{path}: JPEG has no alpha channel; the alpha of the input is dropped", stacklevel=2)
        alpha = None
    if alpha is not None:
        channels.append(alpha)
    arr = to_uint8(torch.cat(channels)).permute(1, 2, 0).numpy()
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if mode == "L" else arr, mode).save(path, **({"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}))


def plan_outputs(inputs, output) -> list[tuple[Path, Path]]:
    """``(input, output)`` file pairs: folders are expanded; ``output`` is a file only for a single
    input file and an image suffix, else a folder receiving files of the same names."""
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(list_images(item))
        elif item.is_file():
            files.append(item)
        else:
            raise ValueError(f"input: {str(item)!r} is neither an image file nor a folder")
    output = Path(output)
    if len(files) == 1 and Path(inputs[0]).is_file() and output.suffix.lower() in IMAGE_EXTENSIONS:
        pairs = [(files[0], output)]
    else:
        pairs = [(f, output / f.name) for f in files]
    names = [o for _, o in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"-o: several inputs share a file name and would overwrite each other in {output}")
    for src, dst in pairs:
        if dst.resolve() == src.resolve():
            raise ValueError(f"-o: writing {dst} would overwrite its input; choose another output folder")
    return pairs


@torch.no_grad()
def run(args) -> int:
    pairs = plan_outputs(args.inputs, args.output)
    fast = fast_options(args)
    device = resolve_device(args.device)
    loaded = load_model(args.model, device=device, **model_hints(args))
    net, width = network_at(loaded, args.width)
    fn = accelerated(net, fast) if fast else net
    tile = None if fast else args.tile  # the FastStudent tiles itself
    scale = net.scale
    skipped = []
    for src, dst in tqdm(pairs, desc=f"x{scale} width {width:g}", unit="img", disable=args.quiet):
        try:
            rgb = load_image(src)
        except ImageReadError as err:
            if args.strict:
                raise
            warnings.warn(f"skipping {src}: {err}", stacklevel=2)
            skipped.append(src)
            continue
        alpha, grey = read_alpha_and_mode(src)
        sr = upscale_tensor(fn, rgb[None].to(device), scale, tile, args.tile_overlap)[0].cpu()
        if alpha is not None:
            alpha = imresize(alpha, scale=scale).clamp(0, 1)
        write_output(sr, alpha, grey, dst)
    if not args.quiet:
        print(f"wrote {len(pairs) - len(skipped)} image(s) to {args.output}; skipped {len(skipped)} unreadable")
    return 1 if skipped else 0
