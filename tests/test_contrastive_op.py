"""The native contrastive-loss op (csd_fast._C) against the eager reference.

Tolerances per dtype: the op and the reference both compute in fp32 from the same input
values, so losses agree to fp32 rounding for every input dtype (rtol 1e-5); gradients are
rounded once to the input dtype, so they agree to that dtype's resolution (fp32 rtol 1e-5,
fp16 rtol 2e-3, bf16 rtol 1.6e-2), with atol scaled by the largest expected gradient.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from csd_fast import ops
from csd_fast.losses.reference import contrastive_ratio_reference, multi_tap_contrastive_reference

GRAD_RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float64: 1e-10}
LOSS_RTOL = 1e-5

# (anchor shape, K): odd images, B = 1, K = 1, m = 1, and sizes spanning several 4096-chunks.
SHAPES = [
    ((1, 1, 1, 1), 1),
    ((2, 3, 3, 5), 3),
    ((3, 4, 7, 9), 10),
    ((1, 8, 1, 1), 2),
    ((5, 1), 4),
    ((2, 3, 40, 41), 5),
    ((3, 2, 64, 65), 1),
]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make_inputs(shape, k, shared, dtype=torch.float32, device="cpu", positive_grad=True):
    anchor = torch.randn(shape, dtype=dtype, device=device).requires_grad_()
    positive = torch.randn(shape, dtype=dtype, device=device).requires_grad_(positive_grad)
    neg_shape = (k, *shape[1:]) if shared else (k, *shape)
    return anchor, positive, torch.randn(neg_shape, dtype=dtype, device=device)


def reference_run(anchor, positive, negatives, reduction):
    """Reference loss and gradients, on copies of the inputs."""
    a = anchor.detach().clone().requires_grad_()
    p = positive.detach().clone().requires_grad_(positive.requires_grad)
    loss = contrastive_ratio_reference(a, p, negatives, reduction)
    grads = torch.autograd.grad(loss, [a, p] if p.requires_grad else [a])
    return loss, grads


def assert_grads_close(actual, expected, dtype, what):
    for got, want, name in zip(actual, expected, ("grad_anchor", "grad_positive")):
        assert got.dtype == want.dtype == dtype, f"{what} {name}: dtype {got.dtype} vs {want.dtype}"
        scale = want.abs().max().item()
        torch.testing.assert_close(
            got, want, rtol=GRAD_RTOL[dtype], atol=GRAD_RTOL[dtype] * scale, msg=lambda m: f"{what} {name}: {m}"
        )


def test_native_backend_is_built():
    assert ops.backend() == "native", "csd_fast._C did not load: pip install --no-build-isolation -e ."


@pytest.mark.parametrize("positive_grad", [True, False], ids=["pos_grad", "pos_const"])
@pytest.mark.parametrize("reduction", ["batch", "sample"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_sample"])
@pytest.mark.parametrize("shape,k", SHAPES, ids=[f"{'x'.join(map(str, s))}_K{k}" for s, k in SHAPES])
def test_matches_reference(shape, k, shared, reduction, positive_grad):
    anchor, positive, negatives = make_inputs(shape, k, shared, positive_grad=positive_grad)
    loss, num, den = ops.contrastive_ratio(anchor, positive, negatives, reduction, return_terms=True)
    grads = torch.autograd.grad(loss, [anchor, positive] if positive_grad else [anchor])
    want_loss, want_grads = reference_run(anchor, positive, negatives, reduction)
    torch.testing.assert_close(loss, want_loss, rtol=LOSS_RTOL, atol=0)
    assert_grads_close(grads, want_grads, torch.float32, f"{shape} K={k}")
    assert len(grads) == (2 if positive_grad else 1)

    a, p = anchor.detach().reshape(shape[0], -1), positive.detach().reshape(shape[0], -1)
    n = negatives.reshape(k, 1 if shared else shape[0], -1)
    want_num, want_den = (a - p).abs().mean(1), (a - n).abs().mean(2)
    if reduction == "batch":
        want_num, want_den = want_num.mean(), want_den.mean(1)
    torch.testing.assert_close(num, want_num, rtol=1e-5, atol=0)
    torch.testing.assert_close(den, want_den, rtol=1e-5, atol=0)
    assert not num.requires_grad and not den.requires_grad


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reduction", ["batch", "sample"])
def test_half_dtypes(dtype, reduction):
    for shape, k in SHAPES[1:4] + SHAPES[5:6]:
        anchor, positive, negatives = make_inputs(shape, k, shared=True, dtype=dtype)
        loss = ops.contrastive_ratio(anchor, positive, negatives, reduction)
        assert loss.dtype == torch.float32
        grads = torch.autograd.grad(loss, [anchor, positive])
        want_loss, want_grads = reference_run(anchor, positive, negatives, reduction)
        torch.testing.assert_close(loss, want_loss, rtol=LOSS_RTOL, atol=0)
        assert_grads_close(grads, want_grads, dtype, f"{dtype} {shape}")


@pytest.mark.parametrize("reduction", ["batch", "sample"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_sample"])
def test_gradcheck_float64(shared, reduction):
    anchor, positive, negatives = make_inputs((3, 2, 3, 5), 4, shared, dtype=torch.float64)
    assert ops.contrastive_ratio(anchor, positive, negatives).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda a, p: ops.contrastive_ratio(a, p, negatives, reduction), (anchor, positive))


def test_gradcheck_multi_tap_float64():
    taps = [make_inputs(shape, 2, shared, torch.float64) for shape, shared in (((2, 3, 4), True), ((2, 5, 1), False))]
    (a0, p0, n0), (a1, p1, n1) = taps

    def loss(a0, p0, a1, p1):
        return ops.multi_tap_contrastive([a0, a1], [p0, p1], [n0, n1], [0.25, 1.5], "sample")

    assert torch.autograd.gradcheck(loss, (a0, p0, a1, p1))


@pytest.mark.parametrize("positive_grad", [True, False], ids=["pos_grad", "pos_const"])
@pytest.mark.parametrize("reduction", ["batch", "sample"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_sample"])
def test_opcheck(shared, reduction, positive_grad):
    taps = [make_inputs(shape, 3, shared, positive_grad=positive_grad) for shape in ((2, 3, 4, 5), (2, 6, 2, 3))]
    anchors, positives, negatives = (list(x) for x in zip(*taps))
    args = (anchors, positives, negatives, [0.5, 2.0], reduction, 1e-7)
    torch.library.opcheck(torch.ops.csd_fast.contrastive_loss.default, args)


def test_deterministic_across_thread_counts():
    anchor, positive, negatives = make_inputs((4, 16, 32, 33), 10, shared=True)  # 5 chunks per sample
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2, 2, 1):
            torch.set_num_threads(n)
            loss, num, den = ops.contrastive_ratio(anchor, positive, negatives, "sample", return_terms=True)
            runs.append([loss, num, den, *torch.autograd.grad(loss, [anchor, positive])])
    finally:
        torch.set_num_threads(threads)
    for run in runs[1:]:
        for got, want in zip(run, runs[0]):
            assert torch.equal(got, want), "results differ between thread counts or runs"


def _loss_and_grads(taps, reduction):
    anchors, positives, negatives = (list(x) for x in zip(*taps))
    loss = ops.multi_tap_contrastive(anchors, positives, negatives, [0.5, 2.0, 1.0], reduction)
    return [loss, *torch.autograd.grad(loss, anchors + positives)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_every_instruction_set_matches_reference_bit_identically(dtype):
    """Each ISA the CPU has (forced through contrastive_cpu_isa) gives the bits of the widest."""
    set_isa = torch.ops.csd_fast.contrastive_cpu_isa
    best = set_isa(0)
    # Full 256-byte blocks with tails, chunks of 4096 elements, shared and per-sample negatives.
    taps = [make_inputs(s, k, shared, dtype) for s, k, shared in (((3, 2, 64, 65), 3, True),
            ((2, 3, 40, 41), 5, False), ((2, 5, 7), 2, True))]  # fmt: skip
    try:
        for reduction in ("batch", "sample"):
            want = _loss_and_grads(taps, reduction)
            for isa in range(1, best + 1):
                assert set_isa(isa) == isa
                got = _loss_and_grads(taps, reduction)
                for i, (g, w) in enumerate(zip(got, want)):
                    assert torch.equal(g, w), f"isa {isa} (best {best}) {reduction}: output {i} differs"
                set_isa(0)
            ref = [a.detach().clone().requires_grad_() for a, _, _ in taps]
            ref_p = [p.detach().clone().requires_grad_() for _, p, _ in taps]
            ref_loss = multi_tap_contrastive_reference(ref, ref_p, [n for _, _, n in taps], [0.5, 2.0, 1.0], reduction)
            torch.testing.assert_close(want[0], ref_loss.to(want[0].dtype), rtol=LOSS_RTOL, atol=0)
            grads, ref_grads = want[1:], torch.autograd.grad(ref_loss, ref + ref_p)
            if dtype == torch.float64:  # fp64 op against the fp32 reference: fp32 tolerances
                grads, ref_grads = [g.float() for g in grads], [g.float() for g in ref_grads]
            for i, (g, r) in enumerate(zip(grads, ref_grads)):  # anchors, then positives
                assert_grads_close([g], [r], torch.float32 if dtype == torch.float64 else dtype, f"{reduction} {i}")
    finally:
        set_isa(0)


def test_instruction_set_errors():
    expected = r"isa: expected 0 \(auto\), 1 \(baseline\), 2 \(avx2\) or 3 \(avx512\), got 4"
    with pytest.raises(ValueError, match=expected):
        torch.ops.csd_fast.contrastive_cpu_isa(4)
    best = torch.ops.csd_fast.contrastive_cpu_isa(0)
    if best < 3:
        with pytest.raises(ValueError, match=f"isa: 3 is not supported by this CPU \\(best: {best}\\)"):
            torch.ops.csd_fast.contrastive_cpu_isa(3)


VGG_TAPS = [(4, 8, 8), (8, 4, 4), (16, 2, 2), (16, 1, 1), (16, 1, 1)]  # tiny stand-ins for relu1_1..5_1
WEIGHTS = [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]


def make_taps(batch=3, k=4):
    anchors = [torch.randn(batch, *s, requires_grad=True) for s in VGG_TAPS]
    positives = [torch.randn(batch, *s) for s in VGG_TAPS]
    return anchors, positives, [torch.randn(k, *s) for s in VGG_TAPS]


@pytest.mark.parametrize("reduction", ["batch", "sample"])
def test_multi_tap_matches_reference(reduction):
    anchors, positives, negatives = make_taps()
    loss = ops.multi_tap_contrastive(anchors, positives, negatives, WEIGHTS, reduction)
    grads = torch.autograd.grad(loss, anchors)
    ref_anchors = [a.detach().clone().requires_grad_() for a in anchors]
    want = multi_tap_contrastive_reference(ref_anchors, positives, negatives, WEIGHTS, reduction)
    torch.testing.assert_close(loss, want, rtol=LOSS_RTOL, atol=0)
    assert_grads_close(grads, torch.autograd.grad(want, ref_anchors), torch.float32, "multi-tap")


def test_torch_compile_aot_eager():
    anchors, positives, negatives = make_taps()
    compiled = torch.compile(ops.multi_tap_contrastive, backend="aot_eager", fullgraph=True)
    loss = compiled(anchors, positives, negatives, WEIGHTS, "sample")
    want = ops.multi_tap_contrastive(anchors, positives, negatives, WEIGHTS, "sample")
    torch.testing.assert_close(loss, want, rtol=0, atol=0)
    assert_grads_close(torch.autograd.grad(loss, anchors), torch.autograd.grad(want, anchors), torch.float32, "compile")


def _bad_inputs():
    a, p, n = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(5, 3, 4, 4)
    return [
        ("positive", ValueError, dict(positive=p[:1]), "(2, 3, 4, 4), got (1, 3, 4, 4)"),
        ("negatives", ValueError, dict(negatives=torch.randn(5, 3, 4, 5)), "got (5, 3, 4, 5)"),
        ("negatives", ValueError, dict(negatives=torch.randn(5, 3, 3, 4, 4)), "got (5, 3, 3, 4, 4)"),
        ("negatives", ValueError, dict(negatives=n[:0]), "K = 0"),
        ("anchor", TypeError, dict(anchor=a.long()), "torch.int64"),
        ("negatives", TypeError, dict(negatives=n.int()), "torch.int32"),
        ("positive", TypeError, dict(positive=p.half()), "torch.float16"),
        ("positive", TypeError, dict(positive=p.numpy()), "ndarray"),
        ("negatives", ValueError, dict(negatives=n.to("meta")), "meta"),
        ("eps", ValueError, dict(eps=0.0), "0.0"),
        ("eps", ValueError, dict(eps=-1e-7), "-1e-07"),
        ("reduction", ValueError, dict(reduction="mean"), "'mean'"),
        ("anchor", ValueError, dict(anchor=a[:0], positive=p[:0]), "(0, 3, 4, 4)"),
        ("anchor", ValueError, dict(anchor=a[:, 0, 0, 0], positive=p[:, 0, 0, 0], negatives=n[:, 0, 0, 0]), "(2,)"),
    ], (a, p, n)


@pytest.mark.parametrize("case", range(len(_bad_inputs()[0])))
def test_bad_input_errors_name_the_argument(case):
    name, error, override, got = _bad_inputs()[0][case]
    a, p, n = _bad_inputs()[1]
    kwargs = dict(anchor=a, positive=p, negatives=n, reduction="batch", eps=1e-7) | override
    with pytest.raises(error) as info:
        ops.contrastive_ratio(**kwargs)
    message = str(info.value)
    assert message.startswith(f"{name}:") and "expected" in message and got in message, message


def test_multi_tap_length_mismatch():
    anchors, positives, negatives = make_taps()
    with pytest.raises(ValueError, match="weights: expected equal"):
        ops.multi_tap_contrastive(anchors, positives, negatives, WEIGHTS[:4])


def test_backward_op_writes_grad_positive_only_when_asked():
    a, p, n = make_inputs((2, 3, 4), 2, shared=False)
    loss, nums, dens = torch.ops.csd_fast.contrastive_loss([a], [p], [n], [1.0], "batch", 1e-7)
    for positive_grad in (False, True):
        ga, gp = torch.ops.csd_fast.contrastive_loss_backward(
            torch.ones(()), [a], [p], [n], nums, dens, [1.0], "batch", 1e-7, positive_grad
        )
        assert ga[0].shape == a.shape and gp[0].shape == (p.shape if positive_grad else (0,))


def test_multi_tap_mixed_dtypes():
    anchors, positives, negatives = make_taps()
    anchors[2], positives[2], negatives[2] = anchors[2].double(), positives[2].double(), negatives[2].double()
    with pytest.raises(ValueError, match=r"anchors\[2\]: expected the dtype and device of anchors\[0\]"):
        ops.multi_tap_contrastive(anchors, positives, negatives, WEIGHTS)


def test_raw_op_checks_its_inputs():
    a, p, n = make_inputs((2, 3, 4), 2, shared=True)
    op = torch.ops.csd_fast.contrastive_loss
    with pytest.raises(RuntimeError, match="positive: expected shape"):
        op([a], [p[:1]], [n], [1.0], "batch", 1e-7)
    with pytest.raises(RuntimeError, match="reduction: expected 'batch' or 'sample', got 'mean'"):
        op([a], [p], [n], [1.0], "mean", 1e-7)
    with pytest.raises(RuntimeError, match="expected equal non-zero lengths, got 1, 1, 1, 2"):
        op([a], [p], [n], [1.0, 1.0], "batch", 1e-7)
    with pytest.raises(RuntimeError, match="tap 1: expected the dtype and device of anchors"):
        op([a, a.double()], [p, p], [n, n], [1.0, 1.0], "batch", 1e-7)


def test_missing_extension_falls_back_loudly():
    code = (
        "import sys, warnings, torch; sys.modules['csd_fast._C'] = None\n"
        "warnings.simplefilter('always')\n"
        "from csd_fast import ops\n"
        "from csd_fast.losses.reference import contrastive_ratio_reference as ref\n"
        "assert ops.backend() == 'eager', ops.backend()\n"
        "a, p, n = torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(5, 3, 4)\n"
        "loss, num, den = ops.contrastive_ratio(a, p, n, 'sample', return_terms=True)\n"
        "assert torch.equal(loss, ref(a, p, n, 'sample')) and num.shape == (2,) and den.shape == (5, 2)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "'eager' backend" in result.stderr and "pip install --no-build-isolation -e ." in result.stderr


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", ["batch", "sample"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_sample"])
def test_cuda_matches_reference(shared, reduction, dtype):
    for shape, k in SHAPES:
        for positive_grad in (True, False):
            anchor, positive, negatives = make_inputs(shape, k, shared, dtype, "cuda", positive_grad)
            loss = ops.contrastive_ratio(anchor, positive, negatives, reduction)
            grads = torch.autograd.grad(loss, [anchor, positive] if positive_grad else [anchor])
            want_loss, want_grads = reference_run(anchor, positive, negatives, reduction)  # computed in fp32
            torch.testing.assert_close(loss, want_loss.to(loss.dtype), rtol=LOSS_RTOL, atol=0)
            if dtype == torch.float64:  # fp64 kernels against the fp32 reference: fp32 tolerances
                want_grads = [g.float() for g in want_grads]
                grads = [g.float() for g in grads]
            assert_grads_close(grads, want_grads, torch.float32 if dtype == torch.float64 else dtype, f"cuda {dtype}")


@pytest.mark.gpu
@needs_cuda
def test_cuda_opcheck_and_determinism():
    anchor, positive, negatives = make_inputs((4, 16, 32, 33), 10, shared=True, device="cuda")
    args = ([anchor], [positive], [negatives], [1.0], "batch", 1e-7)
    torch.library.opcheck(torch.ops.csd_fast.contrastive_loss.default, args)
    runs = []
    for _ in range(3):
        loss = ops.contrastive_ratio(anchor, positive, negatives, "sample")
        runs.append([loss, *torch.autograd.grad(loss, [anchor, positive])])
    assert all(torch.equal(x, y) for run in runs[1:] for x, y in zip(run, runs[0]))
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # launches on the current stream, not the default one
        on_stream = ops.contrastive_ratio(anchor, positive, negatives, "sample")
    stream.synchronize()
    assert torch.equal(on_stream, runs[0][0])


def test_bench_quick_writes_results(tmp_path):
    bench = os.path.join(os.path.dirname(__file__), "..", "bench", "loss.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run(
        [sys.executable, bench, "--quick", "--threads", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "loss_cpu.json").read_text())
    assert [r["variant"] for r in report["rows"]] == ["op", "reference", "official"]
    assert all(r["ms"] > 0 and r["peak_mib"] >= 0 for r in report["rows"]) and report["threads"] == 1
    assert "| 32 | fp32 | official |" in (tmp_path / "loss_cpu.md").read_text()
    (breakdown,) = report["op_breakdown"]  # the op's fwd and bwd per tap, then all taps in one call
    assert [r["tap"] for r in breakdown["rows"]] == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1", "all"]
    assert all(r["fwd_ms"] > 0 and r["bwd_ms"] > 0 for r in breakdown["rows"]) and breakdown["gbps"] > 0
    m = [c * (32 // s) ** 2 for c, s in ((64, 1), (128, 2), (256, 4), (512, 8), (512, 16))]
    assert [r["fwd_bytes"] for r in breakdown["rows"]] == [4 * x * (2 * 2 + 3) for x in m + [sum(m)]]


def _copies(fn):
    """Names of the copy ops (clone, copy_, contiguous) that fn dispatches, from the profiler."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return [e.name for e in prof.events() if e.name in ("aten::clone", "aten::copy_", "aten::contiguous")]


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_sample"])
def test_channels_last_taps_are_read_in_place(shared):
    """Taps sharing a memory format are read without copies; gradients come back in that format."""
    anchor, positive, negatives = make_inputs((3, 8, 5, 7), 4, shared)
    anchor_cl = anchor.detach().to(memory_format=torch.channels_last).requires_grad_()
    positive_cl = positive.detach().to(memory_format=torch.channels_last).requires_grad_()
    # Per-sample negatives: channels_last per negative, stacked so [K, B] stays outermost.
    negatives_cl = negatives.to(memory_format=torch.channels_last) if shared else torch.stack(
        [n.to(memory_format=torch.channels_last) for n in negatives]
    )
    assert negatives_cl.stride()[-3:] == anchor_cl.stride()[1:] and not anchor_cl.is_contiguous()
    for reduction in ("batch", "sample"):
        args = ([anchor_cl], [positive_cl], [negatives_cl], [1.0], reduction, 1e-7)
        assert _copies(lambda: torch.ops.csd_fast.contrastive_loss(*args)) == []
        loss, nums, dens = torch.ops.csd_fast.contrastive_loss(*args)
        backward = torch.ops.csd_fast.contrastive_loss_backward
        bargs = (torch.ones(()), *args[:3], nums, dens, *args[3:], True)
        assert _copies(lambda: backward(*bargs)) == []
        grads = torch.autograd.grad(loss, [anchor_cl, positive_cl])
        assert all(g.stride() == anchor_cl.stride() for g in grads)
        want_loss, want_grads = reference_run(anchor, positive, negatives, reduction)
        torch.testing.assert_close(loss, want_loss, rtol=LOSS_RTOL, atol=0)
        assert_grads_close(grads, want_grads, torch.float32, f"channels_last {reduction}")
        torch.library.opcheck(torch.ops.csd_fast.contrastive_loss.default, args)


def test_mixed_memory_formats_are_copied_and_correct():
    anchor, positive, negatives = make_inputs((2, 4, 3, 5), 3, shared=True)
    anchor_cl = anchor.detach().to(memory_format=torch.channels_last).requires_grad_()
    args = ([anchor_cl], [positive], [negatives], [1.0], "sample", 1e-7)
    assert "aten::clone" in _copies(lambda: torch.ops.csd_fast.contrastive_loss(*args))  # the check above can fail
    loss, _, _ = torch.ops.csd_fast.contrastive_loss(*args)
    grads = torch.autograd.grad(loss, [anchor_cl, positive])
    assert grads[0].stride() == anchor_cl.stride()  # as the fake kernel (empty_like) says
    want_loss, want_grads = reference_run(anchor, positive, negatives, "sample")
    torch.testing.assert_close(loss, want_loss, rtol=LOSS_RTOL, atol=0)
    assert_grads_close(grads, want_grads, torch.float32, "mixed formats")
    torch.library.opcheck(torch.ops.csd_fast.contrastive_loss.default, args)
