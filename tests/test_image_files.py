"""Image files as users have them: EXIF orientation, ICC profiles, multi-page TIFF, tiny images."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from csd_fast.cli import main
from csd_fast.data import load_image
from csd_fast.data.io import image_size, load_image_uint8
from csd_fast.models import build_model
from csd_fast.student_io import load_student, save_student

ORIENTATION = 0x0112


def _rand(h, w, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c) if c else (h, w), dtype=np.uint8)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "s.safetensors"
    return save_student(build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=1).export(0.5), path, width=0.5)


def test_exif_orientation_is_applied(tmp_path):
    arr = _rand(6, 4)
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(arr).save(tmp_path / "phone.png", exif=exif)
    img = load_image(tmp_path / "phone.png")
    expected = np.rot90(arr, k=-1)  # clockwise
    assert img.shape == (3, 4, 6) and image_size(tmp_path / "phone.png") == (4, 6)  # the header size, turned too
    torch.testing.assert_close(load_image_uint8(tmp_path / "phone.png"), torch.from_numpy(expected.transpose(2, 0, 1).copy()))
    torch.testing.assert_close(img, torch.from_numpy(expected.transpose(2, 0, 1).copy()).float() / 255)


def test_exif_orientation_turns_the_alpha_too(student, tmp_path, capsys):
    arr = _rand(6, 4, 4)
    arr[..., 3] = 255
    arr[0, :, 3] = 0  # the top row is transparent; displayed, it is the right-hand column
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png", exif=exif)
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "a_x2.png"), "--model", str(student), "--quiet"]) == 0
    out = np.asarray(Image.open(tmp_path / "a_x2.png"))
    assert out.shape == (8, 12, 4)
    assert out[:, -2:, 3].max() < 128 and out[:, :8, 3].min() > 200


def test_multi_page_tiff_warns_that_only_the_first_page_is_used(tmp_path):
    pages = [Image.fromarray(_rand(5, 7, seed=s)) for s in range(3)]
    pages[0].save(tmp_path / "scan.tif", save_all=True, append_images=pages[1:])
    with pytest.warns(UserWarning, match=r"scan.tif: holds 3 pages/frames; only the first is used"):
        img = load_image(tmp_path / "scan.tif")
    torch.testing.assert_close(img, torch.from_numpy(_rand(5, 7, seed=0).transpose(2, 0, 1).copy()).float() / 255)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pages[0].save(tmp_path / "one.tif")
        load_image(tmp_path / "one.tif")  # one page: no warning


def test_upscale_keeps_the_icc_profile(student, tmp_path):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(_rand(6, 6)).save(tmp_path / "p.png", icc_profile=srgb)
    Image.fromarray(_rand(6, 6)).save(tmp_path / "p.jpg", icc_profile=srgb, quality=95)
    for name in ("p.png", "p.jpg"):
        out = tmp_path / "out" / name
        assert main(["upscale", str(tmp_path / name), "-o", str(out), "--model", str(student), "--quiet"]) == 0
        assert Image.open(out).info.get("icc_profile") == srgb


def test_upscale_drops_a_cmyk_profile_with_a_warning(student, tmp_path):
    fake_cmyk = bytes(16) + b"CMYK" + bytes(108)  # an ICC header whose colour space (bytes 16-19) is CMYK
    Image.fromarray(_rand(6, 6, 4), "CMYK").save(tmp_path / "c.jpg", icc_profile=fake_cmyk, quality=95)
    with pytest.warns(UserWarning, match="CMYK ICC profile does not fit the RGB output"):
        assert main(["upscale", str(tmp_path / "c.jpg"), "-o", str(tmp_path / "o.jpg"), "--model", str(student), "--quiet"]) == 0
    assert "icc_profile" not in Image.open(tmp_path / "o.jpg").info


@pytest.fixture(scope="module")
def contrasty(tmp_path_factory):
    """A student whose 2x2 output of one pixel has strongly different colours (amplified weights)."""
    torch.manual_seed(1)
    net = build_model("edsr", 2, preset=None, n_feats=8, n_resblocks=1).export(0.5)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(12)
    return save_student(net, tmp_path_factory.mktemp("model") / "c.safetensors", width=0.5)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_a_one_pixel_image_keeps_its_colours(contrasty, tmp_path, suffix):
    student = contrasty
    src = tmp_path / f"px{suffix}"
    Image.fromarray(np.array([[[200, 30, 90]]], np.uint8)).save(src, quality=100, **({"subsampling": 0} if suffix == ".jpg" else {}))
    out = tmp_path / f"px_x2{suffix}"
    assert main(["upscale", str(src), "-o", str(out), "--model", str(student), "--quiet"]) == 0
    with torch.no_grad():
        expected = load_student(student)(load_image(src)[None]).clamp(0, 1)[0].mul(255).round().permute(1, 2, 0).numpy()
    got = np.asarray(Image.open(out).convert("RGB")).astype(np.float64)
    assert got.shape == (2, 2, 3) and np.ptp(expected, axis=(0, 1)).max() > 60  # colours differ within the block
    assert np.abs(got - expected).max() <= 8  # JPEG at quality 95, 4:4:4; with 4:2:0 chroma (and lossy WebP) it was off by ~50
