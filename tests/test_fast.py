"""FastStudent (csd_fast.fast): the eager (CPU) backend here, the Triton backend under the interpreter
(a subprocess, see ``_interp_fast.py``) and on a GPU (``gpu`` mark; skipped without CUDA).

Tolerances vs the exported eager student: fp32 atol=rtol=1e-5 (same ops, same order up to fusions);
bf16 atol=rtol=5e-2 and fp16 atol=rtol=2e-2 (storage rounding per layer through a tiny network).
"""
import copy
import threading
import time

import pytest
import torch
from torch import nn

from csd_fast.fast import SUPPORTED_DTYPES, _windows, accelerate
from csd_fast.models import build_model
from _interp_utils import assert_close, run_in_interpreter

TINY = {
    "edsr": dict(n_feats=32, n_resblocks=2, res_scale=0.5),
    "rcan": dict(n_feats=32, n_resgroups=2, n_resblocks=2, reduction=8),
    "carn": dict(n_feats=16),
}
TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (5e-2, 5e-2), torch.float16: (2e-2, 2e-2)}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _model(arch, scale, device="cpu", **over):
    model = build_model(arch, scale=scale, preset=None, **{**TINY[arch], **over}).to(device)
    for p in model.parameters():
        nn.init.normal_(p, std=0.1)
    return model


def test_triton_backend_under_the_interpreter():
    run_in_interpreter("_interp_fast.py")


@pytest.mark.parametrize("arch", ["edsr", "rcan", "carn"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_eager_backend_matches_the_sliced_model(arch, scale):
    model = _model(arch, scale)
    fast = accelerate(model, width=0.5, backend="eager")
    assert fast.backend == "eager"
    for shape in [(2, 3, 5, 7), (1, 3, 1, 1)]:
        x = torch.rand(shape)
        assert_close(fast(x), model(x, 0.5), *TOL[torch.float32], what=f"{arch} x{scale} {shape}")


@pytest.mark.parametrize("arch", ["edsr", "rcan", "carn"])
def test_eager_backend_bf16(arch):
    student = _model(arch, 2).export(0.5)
    x = torch.rand(2, 3, 6, 5)
    y = accelerate(student, dtype=torch.bfloat16, backend="eager")(x)
    assert y.dtype == torch.float32  # output in the input's dtype
    assert_close(y, student(x), *TOL[torch.bfloat16], what=f"{arch} bf16")


def test_output_is_a_normal_tensor():
    fast = accelerate(_model("edsr", 2).export(0.5))
    y = fast(torch.rand(1, 3, 4, 4))
    y.clamp_(0, 1)  # would raise for an inference tensor
    assert not y.is_inference()


@pytest.mark.parametrize("size,tile,overlap", [(12, 3, 4), (7, 7, 2), (20, 6, 0), (5, 2, 9)])
def test_windows_cover_the_image_with_context(size, tile, overlap):
    covered = []
    wins = list(_windows(size, tile, overlap))
    win = min(size, tile + 2 * overlap)
    for start, end, ws in wins:
        assert 0 <= ws and ws + win <= size
        assert ws <= start and end <= ws + win
        assert start - ws >= min(overlap, start) and ws + win - end >= min(overlap, size - end)
        covered += range(start, end)
    assert covered == list(range(size))


def test_tiling_is_exact_within_the_receptive_field():
    """EDSR x4, 1 block: radius 1 + 2 + 1 + 1 + 1/2 + 1/4 < 6 LR pixels."""
    model = _model("edsr", 4, n_resblocks=1)
    x = torch.rand(2, 3, 23, 19)
    one = accelerate(model)(x)
    assert_close(accelerate(model, tile=5, tile_overlap=6)(x), one, 1e-5, 1e-5, what="tiled")
    assert not torch.allclose(accelerate(model, tile=5, tile_overlap=2)(x), one, atol=1e-4)


def test_tiled_rcan_is_approximate_but_shaped():
    model = _model("rcan", 2)
    x = torch.rand(1, 3, 17, 9)
    y = accelerate(model, tile=6, tile_overlap=3)(x)
    assert y.shape == (1, 3, 34, 18) and torch.isfinite(y).all()


def test_supported_dtypes_are_stated_per_model():
    for arch in ("edsr", "rcan", "carn"):
        assert set(SUPPORTED_DTYPES[arch]) == {torch.float32, torch.float16, torch.bfloat16}


def test_bad_arguments_are_named():
    student = _model("edsr", 2).export(0.5)
    with pytest.raises(TypeError, match="student"):
        accelerate(nn.Conv2d(3, 3, 3))
    with pytest.raises(ValueError, match="dtype"):
        accelerate(student, dtype=torch.float64)
    with pytest.raises(ValueError, match="backend"):
        accelerate(student, backend="cudnn")
    with pytest.raises(ValueError, match="width"):
        accelerate(student, width=1.5)
    with pytest.raises(ValueError, match="tile"):
        accelerate(student, tile=0)
    with pytest.raises(ValueError, match="tile_overlap"):
        accelerate(student, tile=4, tile_overlap=-1)
    fast = accelerate(student)
    with pytest.raises(ValueError, match="4-D"):
        fast(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        fast(torch.rand(1, 4, 4, 4))
    with pytest.raises(TypeError, match="floating"):
        fast(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="dtype"):
        fast.double()


def test_drop_in_module_contract():
    """Parameters, buffers, state_dict, .to()/.half()/.float(), attributes (issue 10 item 10)."""
    student = _model("edsr", 2).export(0.5)
    fast = accelerate(student)
    assert (fast.device, fast.dtype, fast.scale, fast.arch) == (torch.device("cpu"), torch.float32, 2, "edsr")
    assert next(fast.parameters()).device == torch.device("cpu")
    assert next(fast.buffers()).device == torch.device("cpu")
    sd = fast.state_dict()
    assert list(sd) == list(student.state_dict())
    for key, value in student.state_dict().items():
        assert torch.equal(sd[key], value), key
    x = torch.rand(2, 3, 6, 5)
    y = fast(x)
    packed = [b for n, b in fast.named_buffers() if n.startswith("packed_")]
    assert packed and fast.to("cpu") is fast and fast.float() is fast and fast.to(torch.float32) is fast
    assert all(a is b for a, b in zip(packed, [b for n, b in fast.named_buffers() if n.startswith("packed_")]))
    assert fast.to(torch.bfloat16) is fast and fast.dtype == torch.bfloat16
    assert next(b for n, b in fast.named_buffers() if n.startswith("packed_")).dtype == torch.bfloat16
    assert_close(fast(x), y, *TOL[torch.bfloat16], what="re-packed in bf16")
    assert next(fast.parameters()).dtype == torch.float32  # the kept weights are never cast
    fast.float()
    assert_close(fast(x), y, 0, 0, what="back to fp32: lossless")
    fresh = type(student)(**student.config)
    fresh.load_state_dict(fast.state_dict())
    assert_close(fresh(x), y, *TOL[torch.float32], what="state_dict into the student class")
    assert_close(copy.deepcopy(fast)(x), y, 0, 0, what="deep copy")


def test_load_state_dict_repacks():
    a, b = _model("carn", 2).export(0.5), _model("carn", 2).export(0.5)
    fast = accelerate(a)
    x = torch.rand(1, 3, 5, 4)
    fast.load_state_dict(b.state_dict())
    assert_close(fast(x), b(x), *TOL[torch.float32], what="after load_state_dict")


def test_accelerate_leaves_the_callers_model_alone():
    model = _model("rcan", 2)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = accelerate(model)
    fast.to(torch.bfloat16)
    fast.load_state_dict({k: torch.zeros_like(v) for k, v in before.items()})
    assert model.training and all(p.requires_grad for p in model.parameters())
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, before[key]), key
    accelerate(model, width=0.5)
    assert model.training


def test_width_must_exist_in_the_model():
    """An exported student has only its own width (issue 10 item 5)."""
    model = _model("edsr", 2)
    student = model.export(0.5)
    with pytest.raises(ValueError, match="width: the model is an exported student"):
        accelerate(student, width=0.5)
    x = torch.rand(1, 3, 4, 4)
    assert_close(accelerate(student, width=1.0)(x), student(x), *TOL[torch.float32], what="width 1.0")
    assert_close(accelerate(model, width=0.5)(x), model(x, 0.5), *TOL[torch.float32], what="full model at 0.5")
    with pytest.raises(ValueError, match="width"):
        accelerate(model, width=0.0)


class _FakeGraph:
    """Stands in for a CUDA graph on CPU: replay re-runs the captured function after a pause, so a
    missing lock lets another thread overwrite the static input in between."""

    def __init__(self, fn):
        self.fn = fn

    def replay(self):
        time.sleep(0.002)
        self.fn()

    def pool(self):
        return "pool"


@pytest.fixture
def fake_graphs(monkeypatch):
    import csd_fast.cuda_graphs as cuda_graphs
    from csd_fast.fast import FastStudent

    pools = []
    monkeypatch.setattr(cuda_graphs, "capture", lambda fn, pool: pools.append(pool) or _FakeGraph(fn))
    monkeypatch.setattr(FastStudent, "_graphs_on", lambda self, x: self.cuda_graphs)  # as on CUDA
    return pools


def test_graph_cache_is_a_bounded_lru_sharing_one_pool(fake_graphs):
    """50 shapes, each run twice: at most ``graph_cache_size`` graphs (and static tensors) stay
    (issue 11 item 4); a shape is captured only when seen again; all captures share one pool."""
    student = _model("edsr", 2, n_resblocks=1).export(0.5)
    fast = accelerate(student, graph_cache_size=3)
    fast(torch.rand(1, 3, 4, 4))
    assert len(fast._graphs) == 0 and not fake_graphs  # seen once: run plainly
    for side in range(5, 55):
        x = torch.rand(1, 3, side, 4)
        fast(x)
        assert_close(fast(x), student(x), *TOL[torch.float32], what=f"replayed {side}")
        assert len(fast._graphs) <= 3 and len(fast._graphs.seen) <= 12
    assert len(fake_graphs) == 50 and fake_graphs[1:] == ["pool"] * 49
    statics = sum(sx.numel() + sy.numel() for _, sx, sy in fast._graphs.graphs.values())
    assert statics <= 3 * (3 * 54 * 4 + 3 * 108 * 8)


def test_tiles_capture_one_graph_at_once(fake_graphs):
    student = _model("edsr", 2, n_resblocks=1).export(0.5)
    fast = accelerate(student, tile=4, tile_overlap=2)
    x = torch.rand(1, 3, 13, 10)
    assert_close(fast(x), accelerate(student, tile=4, tile_overlap=2, cuda_graphs=False)(x), 0, 0, what="tiled graphs")
    assert len(fast._graphs) == 1 and len(fake_graphs) == 1


def test_concurrent_calls_from_threads(fake_graphs):
    """Two threads replaying the same shape's graph (shared static input/output) get their own results."""
    student = _model("carn", 2).export(0.5)
    fast = accelerate(student)
    xs = [torch.rand(1, 3, 6, 6) for _ in range(2)]
    refs = [student(x).detach() for x in xs]
    fast(xs[0]), fast(xs[0])  # captured
    errors = []

    def work(i):
        for _ in range(15):
            y = fast(xs[i])
            if not torch.allclose(y, refs[i], atol=1e-5):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_auto_backend_falls_back_loudly_without_triton(monkeypatch):
    import csd_fast.fast as fast

    monkeypatch.setattr(fast, "_has_triton", lambda: False)
    with pytest.warns(RuntimeWarning, match="triton is not installed"):
        assert fast._pick_backend("auto", torch.device("cuda")) == "eager"
    assert fast._pick_backend("auto", torch.device("cpu")) == ("cpu-auto" if fast.native.available() else "eager")
    assert fast._pick_backend("auto", torch.device("cpu"), torch.float16) == "eager"  # no fp16 CPU kernels
    with pytest.raises(RuntimeError, match="triton"):
        fast._pick_backend("triton", torch.device("cuda"))


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        accelerate(_model("edsr", 2).export(0.5), backend="triton")


# ---- GPU: the Triton backend for real ------------------------------------------------------

GPU_TOL = {torch.float32: (2e-2, 2e-2), torch.float16: (2e-2, 2e-2), torch.bfloat16: (6e-2, 6e-2)}


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("arch,scale", [("edsr", 4), ("edsr", 3), ("rcan", 2), ("carn", 4)])
def test_gpu_matches_eager_student(arch, scale, dtype):
    student = _model(arch, scale, device="cuda").export(0.5)
    fast = accelerate(student, dtype=dtype)
    assert fast.backend == "triton"
    for shape in [(2, 3, 37, 29), (1, 3, 1, 1), (1, 3, 64, 64)]:
        x = torch.rand(shape, device="cuda")
        with torch.no_grad():
            ref = student(x)
        assert_close(fast(x), ref, *GPU_TOL[dtype], what=f"{arch} x{scale} {dtype} {shape}")


@pytest.mark.gpu
@needs_cuda
def test_gpu_cuda_graph_replays_new_inputs():
    student = _model("carn", 2, device="cuda").export(0.5)
    fast = accelerate(student, dtype=torch.float16)
    a, b = torch.rand(2, 1, 3, 32, 48, device="cuda")
    ya, yb = fast(a), fast(b)  # the first call captures, the second replays
    assert len(fast._graphs) == 1
    assert_close(fast(a), ya, 0, 0, what="replay a")
    with torch.no_grad():
        assert_close(yb, student(b), *GPU_TOL[torch.float16], what="replay b")
    nograph = accelerate(student, dtype=torch.float16, cuda_graphs=False)
    assert_close(nograph(b), yb, 1e-3, 1e-3, what="graph vs no graph")


@pytest.mark.gpu
@needs_cuda
def test_gpu_torch_compile_composes():
    student = _model("rcan", 4, device="cuda").export(0.5)
    fast = accelerate(student, dtype=torch.float16, cuda_graphs=False)
    x = torch.rand(1, 3, 24, 40, device="cuda")
    compiled = torch.compile(fast, fullgraph=True)
    assert_close(compiled(x), fast(x), 1e-2, 1e-2, what="compiled")  # fp16; pooling atomics sum in any order


def test_speed_bench_quick_writes_results(tmp_path):
    import json
    import subprocess
    import sys

    from _interp_utils import ROOT

    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "speed.py"), "--quick", "--threads", "1", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (js,) = tmp_path.glob("speed_*.json")
    result = json.loads(js.read_text())
    # CPU: the runtimes table (bench/speed.py cpu_main), demo student at one thread count
    assert [(r["student"], r["threads"]) for r in result["rows"]] == [("demo", 1)]
    for row in result["rows"]:
        assert row["ms"]["native fp32"] > 0 and row["ratios"]["fp32 vs eager"] > 0 and row["max_err"]["native fp32"] < 1e-4
    assert result["meta"]["torch"] == torch.__version__
    assert "| student |" in js.with_suffix(".md").read_text()


@pytest.mark.gpu
@needs_cuda
def test_gpu_tiling_replays_one_graph_and_matches_one_pass():
    model = _model("edsr", 4, device="cuda", n_resblocks=1)
    x = torch.rand(1, 3, 45, 61, device="cuda")
    one = accelerate(model, dtype=torch.float16)(x)
    tiled = accelerate(model, dtype=torch.float16, tile=16, tile_overlap=6)
    # fp16 tolerance: windows and the whole image may autotune to different K tiles (sum order)
    assert_close(tiled(x), one, 1e-2, 1e-2, what="tiled")
    assert len(tiled._graphs) == 1  # every window has the same shape


def test_auto_says_when_the_native_kernels_are_missing(monkeypatch):
    """Without the compiled CPU kernels "auto" still runs (eager), but says why it is slower."""
    from csd_fast import fast, native

    monkeypatch.setattr(native, "available", lambda: False)
    with pytest.warns(RuntimeWarning, match="native CPU kernels are not built"):
        assert fast._pick_backend("auto", torch.device("cpu"), torch.float32) == "eager"
    assert fast._pick_backend("auto", torch.device("cpu"), torch.float16) == "eager"
