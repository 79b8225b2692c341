"""Small image folders cut from the bundled photographs, and tiny `csd-fast train` settings, for the CLI tests."""
from pathlib import Path

from csd_fast.data import save_image
from csd_fast.data.bundled import BUNDLED_TEST, BUNDLED_TRAIN, bundled_dir
from csd_fast.data.io import load_image


def make_folder(folder, split="train", n=4, size=48) -> Path:
    """``n`` centre crops of ``size`` x ``size`` pixels from the bundled ``split`` photos, as PNG."""
    folder = Path(folder)
    names = {"train": BUNDLED_TRAIN, "test": BUNDLED_TEST}[split][:n]
    for name in names:
        img = load_image(bundled_dir() / name)
        h, w = img.shape[1:]
        top, left = (h - size) // 2, (w - size) // 2
        save_image(img[:, top:top + size, left:left + size], folder / f"{Path(name).stem}.png")
    return folder


def tiny_train_args(out, hr_dir, steps=4, **extra) -> list[str]:
    """A two-core-friendly `train` command line: 8-feature, 1-block EDSR x2, 16-pixel HR patches."""
    args = ["train", "--train-hr", str(hr_dir), "--arch", "edsr", "--preset", "demo", "--model-arg", "n_feats=8",
            "--model-arg", "n_resblocks=1", "--scale", "2", "--width", "0.5", "--patch", "16", "--batch", "4",
            "--neg-num", "2", "--lambda-c", "1", "--lr", "1e-3", "--steps", str(steps), "--out", str(out), "--quiet"]
    for key, value in extra.items():
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, *map(str, value if isinstance(value, list) else [value])]
    return args
