"""Image I/O, SR datasets on tiny temp folders, bundled photographs."""
import numpy as np
import pytest
import torch
from PIL import Image

from csd_fast.data import (
    BUNDLED_TEST, BUNDLED_TRAIN, DIV2K, BenchmarkSet, HRFolder, PairedFolder, PatchDataset, bicubic_downscale,
    bundled_images, dihedral, image_size, list_images, load_image, load_image_uint8, save_image, to_uint8,
)


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


def test_uint8_reader_equals_quantized_float_reader_and_header_size(tmp_path):
    Image.fromarray(_rand_u8(10, 12, 4), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(_rand_u8(10, 12, 1)[..., 0], "L").save(tmp_path / "grey.png")
    Image.fromarray((np.arange(120, dtype=np.uint16).reshape(10, 12) * 541)).save(tmp_path / "g16.png")
    Image.fromarray(_rand_u8(10, 12)).save(tmp_path / "rgb.jpg")
    for name in ("rgba.png", "grey.png", "g16.png", "rgb.jpg"):
        u8 = load_image_uint8(tmp_path / name)
        assert u8.dtype == torch.uint8 and torch.equal(u8, to_uint8(load_image(tmp_path / name))), name
        assert image_size(tmp_path / name) == (10, 12)
    with pytest.raises(ValueError, match="cannot read image file .*nothing.png"):
        image_size(tmp_path / "nothing.png")


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


# ---------------------------------------------------------------- datasets

@pytest.fixture(scope="module")
def photos():
    """Eight 60x52 uint8 crops of bundled photographs (HWC numpy, varied content)."""
    return [to_uint8(img[:, 100:160, 120:172]).permute(1, 2, 0).numpy() for _, img in bundled_images("train")[:8]]


def _write(folder, names, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(names, arrays):
        Image.fromarray(arr).save(folder / name)
    return folder


def _t(arr):
    return torch.from_numpy(arr).permute(2, 0, 1)


def _lr_of(hr_u8, scale):
    """The LR the datasets must generate: 8-bit MATLAB bicubic of the 8-bit HR."""
    return to_uint8(bicubic_downscale(hr_u8.float() / 255, scale))


def test_patch_dataset_shapes_repeat_and_range(photos):
    ds = PatchDataset([_t(a).float() / 255 for a in photos[:3]], scale=4, patch_size=32, repeat=5)
    assert len(ds) == 15
    lr, hr = ds[14]
    assert lr.shape == (3, 8, 8) and hr.shape == (3, 32, 32)
    assert lr.dtype == hr.dtype == torch.float32
    assert 0 <= lr.min() and hr.max() <= 1
    with pytest.raises(IndexError):
        ds[15]


def test_patch_and_scale_errors(photos):
    imgs = [_t(photos[0])]
    with pytest.raises(ValueError, match="patch_size .HR side. must be divisible by scale=3, got 32"):
        PatchDataset(imgs, scale=3, patch_size=32)
    with pytest.raises(ValueError, match="image 'image 0' is 60x52 after mod-crop, smaller than patch_size=64"):
        PatchDataset(imgs, scale=2, patch_size=64)
    with pytest.raises(ValueError, match="scale must be an int >= 1, got 0"):
        PatchDataset(imgs, scale=0, patch_size=32)
    with pytest.raises(ValueError, match="repeat must be an int >= 1, got 0"):
        PatchDataset(imgs, scale=2, patch_size=32, repeat=0)
    with pytest.raises(ValueError, match=r"HR image 'image 0' must be a path or a tensor \[3,H,W\], got shape \(1, 8, 8\)"):
        PatchDataset([torch.rand(1, 8, 8)], scale=2, patch_size=4)
    with pytest.raises(ValueError, match="lr_images must have one image per HR image"):
        PatchDataset(imgs, scale=2, patch_size=32, lr_images=[])


def test_augmented_lr_is_the_lr_of_the_augmented_hr(photos):
    # Patch == image, so every item is a dihedral transform of the whole image.
    hr0 = _t(photos[1])[:, :48, :48]
    ds = PatchDataset([hr0], scale=4, patch_size=48, repeat=64)
    seen = set()
    for i in range(len(ds)):
        lr, hr = ds[i]
        hr_u8, lr_u8 = to_uint8(hr), to_uint8(lr)
        assert (_lr_of(hr_u8, 4).int() - lr_u8.int()).abs().max() <= 1
        matches = [f for f in range(8) if torch.equal(dihedral(hr0, *(bool(f >> b & 1) for b in range(3))), hr_u8)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) == 8


def test_random_patches_stay_aligned_with_lr(photos):
    ds = PatchDataset([_t(a) for a in photos[:2]], scale=2, patch_size=24, augment=False, repeat=10)
    for i in range(len(ds)):
        lr, hr = ds[i]
        # the LR of the HR patch equals the LR patch away from the patch border (kernel reach 2 px)
        diff = (_lr_of(to_uint8(hr), 2).int() - to_uint8(lr).int())[:, 2:-2, 2:-2]
        assert diff.abs().max() <= 1


def test_lr_generated_once_per_image_not_per_item(photos, monkeypatch):
    import csd_fast.data.datasets as dsmod
    calls = []
    real = dsmod.bicubic_downscale
    monkeypatch.setattr(dsmod, "bicubic_downscale", lambda x, s: calls.append(1) or real(x, s))
    ds = PatchDataset([_t(a) for a in photos[:3]], scale=2, patch_size=16, repeat=4)
    for i in range(len(ds)):
        ds[i]
    assert len(calls) == 3


def test_given_lr_images_are_used(photos):
    hr = _t(photos[0])[:, :48, :48]
    lr = _t(photos[1])[:, :24, :24]  # deliberately not the bicubic LR of hr
    lr_out, hr_out = PatchDataset([hr], 2, 48, augment=False, lr_images=[lr])[0]
    assert torch.equal(to_uint8(lr_out), lr) and torch.equal(to_uint8(hr_out), hr)
    with pytest.raises(ValueError, match=r"LR image of 'image 0' is \(20, 24\), expected HR \(48, 48\)"):
        PatchDataset([hr], 2, 48, lr_images=[lr[:, :20]])


def test_hr_folder_whole_images_are_mod_cropped(tmp_path, photos):
    folder = _write(tmp_path / "hr", ["b.png", "a.png"], photos[:2])
    for cache in (True, False):
        ds = HRFolder(folder, scale=3, cache=cache, progress=False)
        assert ds.names == ["a.png", "b.png"] and len(ds) == 2
        lr, hr = ds[1]  # b.png = photos[0]; 60x52 -> 60x51
        expected = _t(photos[0])[:, :60, :51]
        assert torch.equal(to_uint8(hr), expected)
        assert torch.equal(to_uint8(lr), _lr_of(expected, 3))
    lr, hr = HRFolder(folder, scale=2, patch_size=16, progress=False)[0]
    assert lr.shape == (3, 8, 8) and hr.shape == (3, 16, 16)


def test_paired_folder_matches_by_stem(tmp_path, photos):
    hr_dir = _write(tmp_path / "HR", ["0001.png", "0002.png"], [photos[0], photos[1]])
    # LR files hold other pictures on purpose: the dataset must use them, not generate LR
    lr_arrays = [photos[3][:30, :26], photos[2][:30, :26]]
    lr_dir = _write(tmp_path / "LR", ["0002x2.png", "0001x2.png"], lr_arrays)
    for cache in (True, False):
        ds = PairedFolder(hr_dir, lr_dir, scale=2, cache=cache, progress=False)
        lr, hr = ds[0]
        assert ds.names == ["0001.png", "0002.png"]
        assert torch.equal(to_uint8(hr), _t(photos[0])) and torch.equal(to_uint8(lr), _t(photos[2][:30, :26]))
    rcan = PairedFolder(_write(tmp_path / "rh", ["baby_HR_x2.png"], photos[:1]),
                        _write(tmp_path / "rl", ["baby_LRBI_x2.png"], [lr_arrays[0]]), scale=2, progress=False)
    assert torch.equal(to_uint8(rcan[0][0]), _t(lr_arrays[0]))
    _write(lr_dir, ["0003x2.png"], [photos[4][:30, :26]])
    _write(hr_dir, ["0004.png"], [photos[4]])
    with pytest.raises(ValueError, match=r"HR without LR in .*: \['0004.png'\].*LR without HR in .*\['0003x2.png'\]"):
        PairedFolder(hr_dir, lr_dir, scale=2, progress=False)


def test_div2k_layout_with_and_without_given_lr(tmp_path, photos):
    hr = [np.ascontiguousarray(np.concatenate([a, a[:, ::-1]], 1)[:, :100]) for a in photos[:3]]  # 60x100
    _write(tmp_path / "DIV2K_train_HR", ["0001.png", "0002.png", "0003.png"], hr)
    with pytest.raises(ValueError, match="patch_size=96"):  # default train patch 48*2 > 60
        DIV2K(tmp_path, "train", scale=2, progress=False)
    ds = DIV2K(tmp_path, "train", scale=2, patch_size=40, repeat=2, progress=False)
    assert len(ds) == 6 and ds[0][0].shape == (3, 20, 20)
    _write(tmp_path / "DIV2K_valid_HR", ["0801.png"], hr[:1])
    lr, full = DIV2K(tmp_path, "valid", scale=2, progress=False)[0]
    assert full.shape == (3, 60, 100) and torch.equal(to_uint8(lr), _lr_of(_t(hr[0]), 2))
    given = np.ascontiguousarray(hr[2][::2, ::2])  # not the bicubic LR: proves the file is used
    _write(tmp_path / "DIV2K_valid_LR_bicubic" / "X2", ["0801x2.png"], [given])
    lr, _ = DIV2K(tmp_path, "valid", scale=2, progress=False)[0]
    assert torch.equal(to_uint8(lr), _t(given))
    with pytest.raises(ValueError, match="split must be 'train' or 'valid', got 'test'"):
        DIV2K(tmp_path, "test", scale=2)
    with pytest.raises(ValueError, match="DIV2K_train_HR not found"):
        DIV2K(tmp_path / "nowhere", "train", scale=2)


def test_benchmark_layouts(tmp_path, photos):
    # EDSR layout, B100 stored as BSD100, LR absent -> generated from the mod-cropped HR
    _write(tmp_path / "BSD100" / "HR", ["x.png"], [photos[0]])
    ds = BenchmarkSet(tmp_path, "B100", scale=4)
    lr, hr = ds[0]
    assert ds.name == "BSD100" and hr.shape == (3, 60, 52)
    assert torch.equal(to_uint8(lr), _lr_of(_t(photos[0]), 4))
    # EDSR layout with given LR
    given = np.ascontiguousarray(photos[1][:15, :13])
    _write(tmp_path / "BSD100" / "LR_bicubic" / "X4", ["xx4.png"], [given])
    assert torch.equal(to_uint8(BenchmarkSet(tmp_path, "bsd100", scale=4)[0][0]), _t(given))
    # BasicSR layout GTmod12 + LRbicx3 (HR 60x52 is mod-cropped to 60x51 for x3)
    _write(tmp_path / "Set5" / "GTmod12", ["baby.png", "bird.png"], photos[:2])
    _write(tmp_path / "Set5" / "LRbicx3", ["baby.png", "bird.png"], [photos[2][:20, :17], photos[3][:20, :17]])
    ds = BenchmarkSet(tmp_path, "set5", scale=3)
    assert ds.names == ["baby.png", "bird.png"] and torch.equal(to_uint8(ds[1][0]), _t(photos[3][:20, :17]))
    # flat layout
    _write(tmp_path / "Urban100", ["img_001.png"], [photos[5]])
    lr, hr = BenchmarkSet(tmp_path, "Urban100", scale=2)[0]
    assert lr.shape == (3, 30, 26) and hr.shape == (3, 60, 52)
    with pytest.raises(ValueError, match="benchmark 'Manga109' not found.*Set5, Set14, B100"):
        BenchmarkSet(tmp_path, "Manga109", scale=2)


def test_corrupt_files_warn_by_default_and_raise_when_strict(tmp_path, photos):
    folder = _write(tmp_path / "hr", ["a.png", "b.png", "c.jpg"], photos[:3])
    _truncate(folder / "b.png")
    with pytest.warns(UserWarning, match=r"skipping 'b.png': cannot read image file .*b.png"):
        ds = HRFolder(folder, scale=2, progress=False)
    assert ds.names == ["a.png", "c.jpg"]
    with pytest.raises(ValueError, match=r"cannot read image file .*b.png"):
        HRFolder(folder, scale=2, strict=True, progress=False)
    with pytest.warns(UserWarning, match="b.png"):
        PatchDataset([folder / "a.png", folder / "b.png"], scale=2, patch_size=16)
    for name in ("a.png", "c.jpg"):
        (folder / name).write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no readable images"):
        HRFolder(folder, scale=2, progress=False)


def test_uncached_paths_mixed_with_given_lr_tensor(tmp_path, photos):
    _write(tmp_path, ["a.png"], [photos[0]])
    lr = _t(photos[1])[:, :30, :26]
    ds = PatchDataset([tmp_path / "a.png"], 2, 16, augment=False, lr_images=[lr], cache=False)
    assert ds._hr[0] == tmp_path / "a.png"  # decoded per item
    lr_out, hr_out = ds[0]
    assert lr_out.shape == (3, 8, 8) and hr_out.shape == (3, 16, 16)


# ---------------------------------------------------------------- bundled photographs

def test_bundled_split_is_fixed_and_disjoint():
    from csd_fast.data.bundled import bundled_dir
    assert BUNDLED_TEST == ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
    assert not set(BUNDLED_TRAIN) & set(BUNDLED_TEST) and len(BUNDLED_TRAIN) >= 10
    for name in BUNDLED_TRAIN + BUNDLED_TEST:
        assert (bundled_dir() / name).is_file(), name


def test_bundled_images_full_size_grey_as_rgb():
    train = dict(bundled_images("train"))
    assert train["camera"].shape == (3, 512, 512)  # greyscale file
    assert torch.equal(train["camera"][0], train["camera"][2])
    test = bundled_images("test")
    assert [n for n, _ in test] == ["astronaut", "chelsea", "coffee", "rocket"]
    assert test[1][1].shape == (3, 300, 451)
    assert not torch.equal(test[0][1][0], test[0][1][1])  # real colour
    for _, img in test:
        assert img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1


def test_bundled_max_side_keeps_aspect():
    small = dict(bundled_images("test", max_side=100))
    assert small["chelsea"].shape == (3, 67, 100)  # 300x451 -> ceil(300 * 100/451)
    assert small["astronaut"].shape == (3, 100, 100)
    assert 0 <= small["rocket"].min() and small["rocket"].max() <= 1
    big = dict(bundled_images("test", max_side=10_000))
    assert big["coffee"].shape == (3, 400, 600)
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'valid'"):
        bundled_images("valid")
    with pytest.raises(ValueError, match="max_side must be a positive int or None, got 0"):
        bundled_images("test", max_side=0)
