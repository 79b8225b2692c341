"""Training batches: epochs without replacement, resume exactness, workers, DDP shares, lazy decoding."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from csd_fast.data import HRFolder, PatchDataset, bicubic_downscale, bundled_images, to_uint8
from csd_fast.data.loader import EpochSampler, batches


class Indexed:
    """Item i is ([i, r], [i, r]) with r a draw from torch's RNG: shows the index and the item's seed."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        t = torch.tensor([float(i), torch.rand(()).item()])
        return t, t.clone()


def _take(it, k):
    return [next(it) for _ in range(k)]


def _indices(batch_list):
    return [int(v) for lr, _ in batch_list for v in lr[:, 0]]


def test_each_index_once_per_epoch_in_a_fresh_order():
    n, b = 7, 3  # epochs end inside batches
    stream = iter(EpochSampler(n, b, seed=5))
    pairs = [next(stream) for _ in range(4 * n)]
    epochs = [[i for i, _ in pairs[e * n:(e + 1) * n]] for e in range(4)]
    assert all(sorted(e) == list(range(n)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled
    assert len({s for _, s in pairs}) == len(pairs)  # one seed per position
    assert _indices(_take(batches(Indexed(n), b, seed=5), 4))[:n] == epochs[0]  # the loader follows the sampler


def test_resumed_stream_draws_the_uninterrupted_batches():
    ds = Indexed(5)
    full = _take(batches(ds, 4, seed=3), 6)
    resumed = _take(batches(ds, 4, seed=3, start_step=4), 2)  # a run resumed after step 4
    for (a, b), (c, d) in zip(full[4:], resumed):
        assert torch.equal(a, c) and torch.equal(b, d)
    assert not torch.equal(full[0][0], _take(batches(ds, 4, seed=4), 1)[0][0])


def test_stream_leaves_the_callers_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    _take(batches(Indexed(5), 2, seed=1), 3)
    assert torch.equal(torch.rand(3), expected)


def test_ranks_shares_make_the_global_batch():
    ds = Indexed(9)
    whole = _take(batches(ds, 4, seed=2), 3)
    r0 = _take(batches(ds, 4, seed=2, world_size=2, rank=0), 3)
    r1 = _take(batches(ds, 4, seed=2, world_size=2, rank=1), 3)
    for (g, _), (a, _), (b, _) in zip(whole, r0, r1):
        assert torch.equal(g[0::2], a) and torch.equal(g[1::2], b)


@pytest.mark.parametrize("kw, match", [
    ({"batch_size": 3, "world_size": 2}, "batch_size"), ({"rank": 2, "world_size": 2}, "rank"),
    ({"num_workers": -1}, "num_workers"), ({"batch_size": 0}, "batch_size"),
])
def test_bad_stream_arguments_are_named(kw, match):
    args = {"batch_size": 4, **kw}
    with pytest.raises(ValueError, match=match):
        batches(Indexed(4), **args)


def test_workers_give_the_batches_of_the_main_process():
    hr = [img for _, img in bundled_images("train", max_side=96)[:4]]
    ds = PatchDataset(hr, scale=2, patch_size=32)  # random crops and flips: item seeds matter
    main = _take(batches(ds, 4, seed=7), 3)
    workers = _take(batches(ds, 4, seed=7, num_workers=2), 3)
    for (a, b), (c, d) in zip(main, workers):
        assert torch.equal(a, c) and torch.equal(b, d)


# ---------------------------------------------------------------- lazy decoding
@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hr")
    for name, img in bundled_images("train", max_side=90)[:3]:
        Image.fromarray(to_uint8(img).permute(1, 2, 0).numpy()).save(folder / f"{name}.png")
    return folder


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lazy_lr_patches_equal_the_whole_image_downscale(hr_folder, scale):
    lazy = HRFolder(hr_folder, scale, patch_size=12 * scale, augment=False, cache=False, progress=False)
    cached = HRFolder(hr_folder, scale, patch_size=12 * scale, augment=False, cache=True, progress=False)
    for k in range(len(lazy)):
        for trial in range(6):  # random positions: borders and interior
            torch.manual_seed(trial)
            lr_a, hr_a = lazy[k]
            torch.manual_seed(trial)
            lr_b, hr_b = cached[k]
            assert torch.equal(hr_a, hr_b)
            torch.testing.assert_close(lr_a, lr_b, rtol=0, atol=1 / 255 + 1e-6)  # float rounding before 8 bit
            assert (lr_a != lr_b).float().mean() < 0.01
    whole_lr, whole_hr = HRFolder(hr_folder, scale, cache=False, progress=False)[0]
    assert torch.equal(to_uint8(whole_lr), to_uint8(bicubic_downscale(whole_hr, scale)))


def test_uncached_files_are_decoded_per_item(hr_folder, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for p in sorted(hr_folder.iterdir()):
        (folder / p.name).write_bytes(p.read_bytes())
    lazy = HRFolder(folder, 2, patch_size=16, cache=False, progress=False)
    cached = HRFolder(folder, 2, patch_size=16, cache=True, progress=False)
    victim = folder / lazy.names[0]
    Image.fromarray(np.zeros((90, 90, 3), np.uint8)).save(victim)  # same name, new pixels
    assert lazy[0][1].max() == 0 and cached[0][1].max() > 0  # read now vs read at construction
    victim.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=f"cannot read image file .*{victim.name}"):
        lazy[0]


def test_disk_cache_decodes_each_file_once_and_gives_the_memory_items(hr_folder, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for p in sorted(hr_folder.iterdir()):
        (folder / p.name).write_bytes(p.read_bytes())
    cache = tmp_path / "decoded"
    memory = HRFolder(folder, 2, patch_size=16, cache=True, progress=False)
    disk = HRFolder(folder, 2, patch_size=16, cache=cache, progress=False)
    for k in range(len(disk)):
        for trial in range(2):
            torch.manual_seed(trial)
            a = disk[k]
            torch.manual_seed(trial)
            b = memory[k]
            assert torch.equal(a[1], b[1])
            torch.testing.assert_close(a[0], b[0], rtol=0, atol=1 / 255 + 1e-6)  # LR made per patch
    files = sorted(cache.glob("*.npy"))
    assert len(files) == len(disk)  # one decoded file per image, reused by every later read
    stamps = [f.stat().st_mtime_ns for f in files]
    _take(batches(disk, 4, seed=1, num_workers=2), 2)
    assert [f.stat().st_mtime_ns for f in sorted(cache.glob("*.npy"))] == stamps
    victim = folder / disk.names[0]
    Image.fromarray(np.zeros((90, 90, 3), np.uint8)).save(victim)  # a changed file gets a new entry
    assert disk[0][1].max() == 0 and len(list(cache.glob("*.npy"))) == len(disk) + 1
    with pytest.raises(TypeError, match="cache"):
        HRFolder(folder, 2, cache=1.5, progress=False)


@pytest.mark.slow
def test_data_bench_quick(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_data", Path(__file__).resolve().parent.parent / "bench" / "data.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.main(["--quick", "--out", str(tmp_path)])
    assert [r["variant"] for r in report["rows"]] == list(bench.VARIANTS)
    assert all(r["rate_0"] > 0 and r["rate_w"] > 0 for r in report["rows"])
    assert "images/s, 2 workers" in (tmp_path / "data_cpu.md").read_text()
