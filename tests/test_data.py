"""Image I/O, SR datasets on tiny temp folders, bundled photographs."""
import numpy as np
import pytest
import torch
from PIL import Image

from csd_fast.data import list_images, load_image, save_image, to_uint8


def _rand_u8(h, w, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ---------------------------------------------------------------- io

def test_load_rgb_png_exact(tmp_path):
    arr = _rand_u8(20, 30)
    Image.fromarray(arr).save(tmp_path / "a.png")
    t = load_image(tmp_path / "a.png")
    assert t.shape == (3, 20, 30) and t.dtype == torch.float32
    np.testing.assert_array_equal(to_uint8(t).permute(1, 2, 0).numpy(), arr)


def test_load_rgba_drops_alpha_and_grey_becomes_three_channels(tmp_path):
    rgba = _rand_u8(10, 12, 4)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    t = load_image(tmp_path / "rgba.png")
    assert t.shape == (3, 10, 12)
    np.testing.assert_array_equal(to_uint8(t).permute(1, 2, 0).numpy(), rgba[..., :3])

    grey = _rand_u8(10, 12, 1)[..., 0]
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    g = load_image(tmp_path / "grey.png")
    assert g.shape == (3, 10, 12)
    for c in range(3):
        np.testing.assert_array_equal(to_uint8(g[c]).numpy(), grey)


def test_load_16_bit_greyscale(tmp_path):
    a = np.array([[0, 257, 65535], [1000, 30000, 65534]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    t = load_image(tmp_path / "g16.png")
    assert t.shape == (3, 2, 3)
    torch.testing.assert_close(t[1], torch.from_numpy(a / 65535.0).float())


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_corrupt_and_missing_files_name_the_file(tmp_path, suffix):
    path = tmp_path / f"noise{suffix}"
    Image.fromarray(_rand_u8(64, 64)).save(path)
    _truncate(path)
    with pytest.raises(ValueError, match=f"cannot read image file .*noise{suffix}"):
        load_image(path)
    junk = tmp_path / f"junk{suffix}"
    junk.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=f"junk{suffix}"):
        load_image(junk)
    with pytest.raises(ValueError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_save_roundtrip_creates_parents_and_quantizes(tmp_path):
    img = torch.rand(1, 3, 9, 11)
    out = save_image(img, tmp_path / "a" / "b" / "x.png")
    assert out.exists()
    torch.testing.assert_close(load_image(out), to_uint8(img[0]).float() / 255, rtol=0, atol=0)
    jpg = save_image(img[0], tmp_path / "x.JPG")
    with Image.open(jpg) as im:
        assert im.format == "JPEG"
    with pytest.raises(ValueError, match="path must end in one of.*x.gif"):
        save_image(img[0], tmp_path / "x.gif")
    with pytest.raises(ValueError, match=r"img must be \[3,H,W\].*\(2, 3, 9, 11\)"):
        save_image(torch.rand(2, 3, 9, 11), tmp_path / "y.png")


def test_list_images_sorted_filtered_and_errors(tmp_path):
    for name in ["b.PNG", "a.jpg", "c.webp", "notes.txt", "d.bmp"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.webp", "d.bmp"]
    with pytest.raises(ValueError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*has no images"):
        list_images(tmp_path / "empty")
