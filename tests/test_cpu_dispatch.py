"""The per-layer CPU dispatcher (``csd_fast.cpu_dispatch``): each choice gives the eager model's output,
the choice is what runs, and it is kept in memory and on disk under the right key.

Timing is never asserted: the measurement is replaced by fakes that say which backend "won" (or
by a fake clock). Tolerances vs the exported eager student as in test_fast.py: fp32 1e-5; bf16 at
most 2x the error of PyTorch's own bf16 path (the eager backend) against the fp32 model, plus 1e-3
(as in test_cpu_kernels.py).
"""
import json
import time

import pytest
import torch
from torch import nn

from csd_fast import cpu_dispatch, native
from csd_fast.disk_cache import JsonCache
from csd_fast.fast import _pick_backend, accelerate
from csd_fast.models import build_model

pytestmark = pytest.mark.skipif(not native.available(), reason="csd_fast._C built without the csd_cpu ops")

TINY = {
    "edsr": dict(n_feats=16, n_resblocks=2, res_scale=0.5),
    "rcan": dict(n_feats=16, n_resgroups=2, n_resblocks=2, reduction=4),
    "carn": dict(n_feats=16),
}


def _student(arch, scale=2):
    model = build_model(arch, scale=scale, preset=None, **TINY[arch])
    for p in model.parameters():
        nn.init.normal_(p, std=0.1)
    return model.export(1.0).eval()


def _rel_err(got, ref):
    return ((got.float() - ref.float()).abs().max() / ref.float().abs().max()).item()


@pytest.fixture
def choices(tmp_path, monkeypatch):
    """A fresh dispatch cache in ``tmp_path`` (as a new process would start), measuring enabled."""
    monkeypatch.delenv("CSD_FAST_CPU_DISPATCH", raising=False)
    cache = JsonCache("cpu_dispatch.json", "CPU dispatch cache", tmp_path / "cpu_dispatch.json")
    monkeypatch.setattr(cpu_dispatch, "CHOICES", cache)
    return cache


def _fake_measure(monkeypatch, winner):
    """Replace the timing: ``winner(call_index)`` names the backend that is twice as fast; returns the call log."""
    calls = []

    def measure(runs):
        assert sorted(runs) == ["eager", "native"]
        for run in runs.values():
            run()  # both variants really run (on scratch outputs)
        name = winner(len(calls))
        calls.append(name)
        return {name: 1.0, ("eager" if name == "native" else "native"): 2.0}

    monkeypatch.setattr(cpu_dispatch, "measure", measure)
    return calls


def _count_backend_calls(fast, monkeypatch):
    """``{"native": n, "eager": n}``: protocol calls each inner backend of ``fast.ops`` received."""
    counts = {"native": 0, "eager": 0}
    for name in counts:
        inner = getattr(fast.ops, name)
        for method in ("conv", "res_block", "ca_residual"):
            def counted(*args, _orig=getattr(inner, method), _name=name, **kwargs):
                counts[_name] += 1
                return _orig(*args, **kwargs)

            monkeypatch.setattr(inner, method, counted)
    return counts


def test_cpu_auto_is_opt_in_and_cpu_only():
    # "auto" stays native until cpu-auto wins the benchmark (see csd_fast.fast's docstring)
    assert _pick_backend("auto", torch.device("cpu"), torch.float32) == "native"
    assert accelerate(_student("edsr"), backend="cpu-auto").backend == "cpu-auto"
    with pytest.raises(ValueError, match="expected a CPU model"):
        _pick_backend("cpu-auto", torch.device("cuda"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("arch", ["edsr", "rcan", "carn"])
@pytest.mark.parametrize("pattern", ["native", "eager", "mixed"])
def test_every_choice_matches_the_eager_student(arch, dtype, pattern, choices, monkeypatch):
    winner = {"native": lambda i: "native", "eager": lambda i: "eager", "mixed": lambda i: ("native", "eager")[i % 2]}[pattern]
    calls = _fake_measure(monkeypatch, winner)
    student = _student(arch, scale=3)
    fast = accelerate(student, dtype=dtype, backend="cpu-auto")
    x = torch.rand(2, 3, 7, 10)
    with torch.no_grad():
        ref = student(x)
    y = fast(x)  # measures (both backends run) and chooses
    counts = _count_backend_calls(fast, monkeypatch)
    assert torch.equal(fast(x), y)  # the stored choices, nothing measured
    assert y.dtype == x.dtype and y.shape == ref.shape
    if dtype == torch.float32:
        assert _rel_err(y, ref) <= 1e-5
    else:
        assert _rel_err(y, ref) <= 2 * _rel_err(accelerate(student, dtype=dtype, backend="eager")(x), ref) + 1e-3
    # the choice is what runs: a forced backend gets every call, the mixed pattern splits them
    assert calls and set(calls) == ({"native", "eager"} if pattern == "mixed" else {pattern})
    if pattern == "mixed":
        assert counts["native"] > 0 and counts["eager"] > 0
    else:
        other = "eager" if pattern == "native" else "native"
        assert counts[pattern] > 0 and counts[other] == 0


def test_choices_are_stored_reread_and_keyed(choices, monkeypatch):
    calls = _fake_measure(monkeypatch, lambda i: ("native", "eager")[i % 2])
    student = _student("carn")
    x = torch.rand(1, 3, 12, 20)
    threads = torch.get_num_threads()
    y1 = accelerate(student, backend="cpu-auto")(x)
    n_keys = len(calls)
    stored = json.loads(choices.path.read_text())
    assert len(stored) == n_keys > 2  # one measurement per distinct call site, each written to disk
    assert sorted(e["choice"] for e in stored.values()) == sorted(calls)
    isa = native.best_isa(torch.float32)
    sizes = set()
    for key in stored:
        *context, op, fields = key.split("|")
        assert context == [cpu_dispatch.cpu_model(), f"isa {isa}", f"torch {torch.__version__}"]
        assert op in ("conv", "res_block")
        fields = dict(f.split("=") for f in fields.split(","))
        assert fields["dtype"] == "float32" and fields["threads"] == str(threads)
        sizes.add((fields["pixels"], fields["width"]))
    # LR 12x20 = 240 pixels -> 256, width 20 -> 32; the tail at HR 24x40: 960 -> 1024, 40 -> 64
    assert sizes == {("256", "32"), ("1024", "64")}
    # a new process: read from disk, nothing measured again, the same choices run
    monkeypatch.setattr(cpu_dispatch, "CHOICES", JsonCache("cpu_dispatch.json", "CPU dispatch cache", choices.path))
    fast = accelerate(student, backend="cpu-auto")
    counts = _count_backend_calls(fast, monkeypatch)
    y2 = fast(x)
    assert len(calls) == n_keys and torch.equal(y1, y2)
    assert counts["native"] > 0 and counts["eager"] > 0
    fast(torch.rand(1, 3, 13, 19))  # same size buckets: no new measurement
    assert len(calls) == n_keys
    fast(torch.rand(1, 3, 12, 40))  # wider: new keys
    assert len(calls) == 2 * n_keys
    bf16 = accelerate(student, dtype=torch.bfloat16, backend="cpu-auto")
    bf16(x)  # another dtype: new keys
    assert len(calls) == 3 * n_keys
    torch.set_num_threads(threads + 1)
    try:
        fast(x)  # another thread count: new keys
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 4 * n_keys
    assert len(json.loads(choices.path.read_text())) == 4 * n_keys


def test_a_corrupt_cache_file_is_ignored_with_a_warning_and_replaced(choices, monkeypatch):
    calls = _fake_measure(monkeypatch, lambda i: "eager")
    choices.path.write_text("{not json")
    fast = accelerate(_student("edsr"), backend="cpu-auto")
    with pytest.warns(RuntimeWarning, match="cpu_dispatch.json"):
        fast(torch.rand(1, 3, 8, 8))
    assert calls
    stored = json.loads(choices.path.read_text())
    assert len(stored) == len(calls) and all(e["choice"] == "eager" for e in stored.values())


def test_an_entry_we_did_not_write_is_measured_again(choices, monkeypatch):
    calls = _fake_measure(monkeypatch, lambda i: "eager")
    fast = accelerate(_student("edsr"), backend="cpu-auto")
    fast(torch.rand(1, 3, 8, 8))
    stored = json.loads(choices.path.read_text())
    key = next(iter(stored))
    choices.path.write_text(json.dumps({**stored, key: {"choice": "onednn"}}))
    monkeypatch.setattr(cpu_dispatch, "CHOICES", JsonCache("cpu_dispatch.json", "CPU dispatch cache", choices.path))
    n = len(calls)
    fast(torch.rand(1, 3, 8, 8))
    assert len(calls) == n + 1 and json.loads(choices.path.read_text())[key]["choice"] == "eager"


def test_an_unwritable_cache_warns_and_keeps_the_choice_in_memory(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    cache = JsonCache("cpu_dispatch.json", "CPU dispatch cache", tmp_path / "file" / "cpu_dispatch.json")
    monkeypatch.setattr(cpu_dispatch, "CHOICES", cache)
    calls = _fake_measure(monkeypatch, lambda i: "eager")
    fast = accelerate(_student("edsr"), backend="cpu-auto")
    with pytest.warns(RuntimeWarning, match="cannot store the CPU dispatch choice"):
        fast(torch.rand(1, 3, 8, 8))
    n = len(calls)
    counts = _count_backend_calls(fast, monkeypatch)
    fast(torch.rand(1, 3, 8, 8))
    assert len(calls) == n and counts["native"] == 0 and counts["eager"] > 0


@pytest.mark.parametrize("forced", ["native", "eager"])
def test_forcing_a_backend_measures_nothing(forced, choices, monkeypatch):
    monkeypatch.setenv("CSD_FAST_CPU_DISPATCH", forced)
    calls = _fake_measure(monkeypatch, lambda i: "native" if forced == "eager" else "eager")  # would pick the other
    fast = accelerate(_student("rcan"), backend="cpu-auto")
    counts = _count_backend_calls(fast, monkeypatch)
    fast(torch.rand(1, 3, 8, 8))
    assert not calls and not choices.path.exists()
    assert counts[forced] > 0 and counts["eager" if forced == "native" else "native"] == 0


def test_a_bad_mode_is_refused(monkeypatch):
    monkeypatch.setenv("CSD_FAST_CPU_DISPATCH", "fastest")
    with pytest.raises(ValueError, match="CSD_FAST_CPU_DISPATCH: expected one of"):
        accelerate(_student("edsr"), backend="cpu-auto")
    with pytest.raises(ValueError, match="mode: expected one of"):
        cpu_dispatch.CpuAutoBackend(torch.float32, torch.zeros(3), mode="fast")


def test_measure_interleaves_and_takes_medians(monkeypatch):
    """A fake clock: each call of a variant advances it by that variant's cost."""
    now = [0.0]
    log = []
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])

    def variant(name, cost):
        def run():
            log.append(name)
            now[0] += cost
        return run

    seconds = cpu_dispatch.measure({"native": variant("native", 2e-3), "eager": variant("eager", 1e-3)})
    assert seconds == pytest.approx({"native": 2e-3, "eager": 1e-3})
    rounds = cpu_dispatch.MAX_ROUNDS  # warm-up 3 ms: the 50 ms budget allows more than the maximum
    assert log[:2] == ["native", "eager"] and len(log) == 2 * (rounds + 1)
    assert log[2:6] == ["native", "eager", "eager", "native"]  # order alternates round by round
    now[0], log[:] = 0.0, []
    cpu_dispatch.measure({"native": variant("native", 1.0), "eager": variant("eager", 1.0)})
    assert len(log) == 2 * (cpu_dispatch.MIN_ROUNDS + 1)  # slow layers: the minimum


def test_the_native_default_wins_within_the_margin():
    assert cpu_dispatch.choose({"native": 1.0, "eager": 0.5}) == "eager"
    assert cpu_dispatch.choose({"native": 1.0, "eager": 0.97}) == "native"  # < 5% faster: keep the default
    assert cpu_dispatch.choose({"native": 1.0, "eager": 1.5}) == "native"
