"""The CUDA kernels (csrc/cuda/contrastive_kernels.cu) executed on the CPU, against the reference.

g++ compiles the .cu as C++ against the SIMT emulator ``tests/simt/simt_emu.h``: every GPU
thread is a fiber, ``__syncthreads`` and warp shuffles are real barriers, and each block runs
under an adversarial schedule (forward, reverse or shuffled thread priority), so a missing
barrier reads stale shared memory. The library is built once per session (``-O1``) with
``CSD_CUDA_TARGET_BLOCKS=4`` so that small test grids are also split into sample groups of
uneven sizes. Inputs sit inside NaN-filled buffers: an out-of-range read turns a sum into NaN,
and an out-of-range write is seen in the guard. The C launch interface (contrastive_cuda.h)
is called through ctypes with raw pointers.

Tolerances: those of test_contrastive_op.py (losses rtol 1e-5; gradients rounded once to the
input dtype). float64 is compared with the fp32 reference at fp32 tolerances.

test_mutations_fail builds mutants of the .cu (a sign flip, a wrong index, each of the three
``__syncthreads()`` removed) and checks that each breaks the comparison. Also tried by hand
(each failed 12 to 40 of the 40 fp32 cases): the backward's sign count negated, grad_anchor
stored at the group's first sample, a wrong partial index in the finalize, the forward's
double buffer collapsed to one buffer, every thread parking its negatives in slot 0.
"""
import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from csd_fast.losses.reference import contrastive_ratio_reference, multi_tap_contrastive_reference
from test_contrastive_op import GRAD_RTOL, LOSS_RTOL, SHAPES

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "csrc" / "cuda" / "contrastive_kernels.cu"
SIMT = Path(__file__).resolve().parent / "simt"
CHECKS = SIMT / "emulator_checks.cu"
GXX = shutil.which("g++")
DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}  # csd_dtype
GUARD = 64  # NaN elements on each side of every buffer

pytestmark = pytest.mark.skipif(GXX is None, reason="g++ not found: cannot build the CPU emulation of the kernels")

# CUDA syntax that is not C++: the launch `kernel<<<config>>>(args)` and `extern __shared__`.
_LAUNCH = re.compile(r"([\w:]+(?:<[\w\s,:]*>)?)\s*<<<([^;]*?)>>>\s*\(", re.S)
_EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w:][\w:\s]*?)\s+(\w+)\[\];")


def translate(source: str, path: Path) -> str:
    """The .cu text as C++ for simt_emu.h (line numbers kept for compiler messages)."""
    source = _LAUNCH.sub(r"::simt::launch(\2)(\1, ", source)
    source = _EXTERN_SHARED.sub(r"\1* \2 = reinterpret_cast<\1*>(::simt::dynamic_shared());", source)
    return f'#line 1 "{path}"\n{source}'


def build(source: str, out_dir: Path, origin: Path = SOURCE) -> ctypes.CDLL:
    """Compiles the (translated) kernel source with the emulator into a shared library."""
    cpp = out_dir / "kernels.cpp"
    cpp.write_text(translate(source, origin))
    lib = out_dir / "libkernels.so"
    command = [
        GXX, "-std=c++17", "-O1", "-shared", "-fPIC", "-Wall", "-Wno-unknown-pragmas", "-DCSD_CUDA_TARGET_BLOCKS=4",
        "-I", str(SIMT / "include"), "-I", str(SOURCE.parent), str(cpp), str(SIMT / "simt_api.cpp"), "-o", str(lib),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"
    lib = ctypes.CDLL(str(lib))
    lib.simt_last_message.restype = ctypes.c_char_p
    lib.simt_set_schedule_offset.argtypes = [ctypes.c_int]
    return lib


def bind_contrastive(lib):
    """Argument types of the C launch interface (contrastive_cuda.h)."""
    P, I64, INT, F64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
    lib.csd_contrastive_forward_workspace.argtypes = [INT, I64, I64, I64]
    lib.csd_contrastive_forward_workspace.restype = ctypes.c_size_t
    lib.csd_contrastive_forward.argtypes = [INT, P, P, P, I64, I64, I64, I64, I64, INT, F64, F64, INT, P, P, P, P, P]
    lib.csd_contrastive_backward.argtypes = [INT, P, P, P, P, P, P, I64, I64, I64, I64, I64, INT, F64, F64, P, P, P]
    return lib


@pytest.fixture(scope="session")
def kernels(tmp_path_factory):
    return bind_contrastive(build(SOURCE.read_text(), tmp_path_factory.mktemp("cuda_on_cpu")))


@pytest.fixture(scope="session")
def checks(tmp_path_factory):
    lib = build(CHECKS.read_text(), tmp_path_factory.mktemp("simt_checks"), CHECKS)
    lib.run_check.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    return lib


def test_emulated_warp_shuffles(checks):
    values = torch.randperm(1000)[:64].int()
    out = torch.zeros(64, 4, dtype=torch.int32)
    check(checks, checks.run_check(0, values.data_ptr(), out.data_ptr(), 0))
    t = torch.arange(64)
    lane, first = t % 32, t - t % 32
    down = torch.where(lane + 3 < 32, t + 3, t)  # out-of-range sources keep their own value
    up = torch.where(lane >= 5, t - 5, t)
    want = torch.stack([values[down], values[up], values[first + (lane ^ 9)], values[first + 7]], 1)
    assert torch.equal(out, want)


def test_emulated_atomics_and_dynamic_shared_memory(checks):
    count, total = torch.zeros(1, dtype=torch.int32), torch.zeros(1)
    check(checks, checks.run_check(1, count.data_ptr(), total.data_ptr(), 0))
    assert count.item() == 300 and total.item() == 150.0
    out = torch.zeros(96)
    check(checks, checks.run_check(6, out.data_ptr(), None, 64 * 1024))  # > 48 KB after opting in
    assert torch.equal(out, 95 - torch.arange(96.0))


@pytest.mark.parametrize("which,message", [
    (2, "deadlock|exited while others wait"), (3, "deadlock|exited while others wait"),
    (4, "misaligned __ldg of a 16-byte value"), (5, "exceeds the kernel's limit"),
])  # fmt: skip
def test_emulator_reports_what_a_gpu_would_not_survive(checks, which, message):
    """Barriers some threads never reach, misaligned vector loads, too much shared memory."""
    a, b = torch.zeros(256), torch.zeros(256)
    assert checks.run_check(which, a.data_ptr(), b.data_ptr(), 100 * 1024) != 0  # > any limit set above
    assert re.search(message, checks.simt_last_message().decode())


def guarded(t: torch.Tensor, shift: int = 0) -> torch.Tensor:
    """A contiguous copy of t inside a NaN-filled buffer, `shift` elements past a 16-byte boundary."""
    buffer = torch.full((t.numel() + 2 * GUARD,), float("nan"), dtype=t.dtype)
    view = buffer[GUARD + shift : GUARD + shift + t.numel()].view(t.shape)
    view.copy_(t)
    view.buffer = buffer  # keeps the buffer reachable for the guard check
    return view


def guards_intact(view: torch.Tensor) -> bool:
    start = view.storage_offset()
    return bool(view.buffer[:start].isnan().all() and view.buffer[start + view.numel() :].isnan().all())


def check(lib, rc):
    assert rc == 0, f"kernel launch failed ({rc}): {lib.simt_last_message().decode()}"


def run_kernels(lib, anchor, positive, negatives, reduction, *, positive_grad=True, eps=1e-7, weight=1.0, shift=0,
                neg_strides=None, grad_loss=1.0):  # fmt: skip
    """Forward then backward through the C interface; returns loss, num, den, grad_anchor, grad_positive."""
    batch, k = anchor.shape[0], negatives.shape[0]
    m = anchor[0].numel()
    shared = negatives.dim() == anchor.dim()
    acc = torch.float64 if anchor.dtype == torch.float64 else torch.float32
    dtype = DTYPES[anchor.dtype]
    a, p = guarded(anchor.detach(), shift), guarded(positive.detach(), shift)
    n = guarded(negatives, shift) if neg_strides is None else negatives
    stride_k, stride_b = neg_strides or ((m, 0) if shared else (batch * m, m))
    workspace = torch.empty(lib.csd_contrastive_forward_workspace(dtype, batch, k, m), dtype=torch.uint8)
    loss, num, den = torch.zeros((), dtype=acc), torch.empty(batch, dtype=acc), torch.empty(k, batch, dtype=acc)
    per_sample = int(reduction == "sample")
    check(lib, lib.csd_contrastive_forward(
        dtype, a.data_ptr(), p.data_ptr(), n.data_ptr(), batch, k, m, stride_k, stride_b, per_sample, eps, weight, 0,
        workspace.data_ptr(), loss.data_ptr(), num.data_ptr(), den.data_ptr(), None))  # fmt: skip
    ga = guarded(torch.empty_like(anchor), shift)
    gp = guarded(torch.empty_like(positive), shift) if positive_grad else None
    grad = torch.tensor(grad_loss, dtype=acc)
    check(lib, lib.csd_contrastive_backward(
        dtype, grad.data_ptr(), a.data_ptr(), p.data_ptr(), n.data_ptr(), num.data_ptr(), den.data_ptr(), batch, k, m,
        stride_k, stride_b, per_sample, eps, weight, ga.data_ptr(), gp.data_ptr() if positive_grad else None, None))  # fmt: skip
    for out in (ga, gp) if positive_grad else (ga,):
        assert guards_intact(out), "a kernel wrote outside its output"
    return loss, num, den, ga, gp


def reference(anchor, positive, negatives, reduction, weight=1.0):
    a = anchor.detach().clone().requires_grad_()
    p = positive.detach().clone().requires_grad_()
    loss = weight * contrastive_ratio_reference(a, p, negatives, reduction)
    ga, gp = torch.autograd.grad(loss, [a, p])
    batch, k = anchor.shape[0], negatives.shape[0]
    af, pf = a.detach().float().reshape(batch, -1), p.detach().float().reshape(batch, -1)
    nf = negatives.float().reshape(k, batch if negatives.dim() > anchor.dim() else 1, -1)
    return loss, (af - pf).abs().mean(1), (af - nf).abs().mean(2), ga, gp


def assert_matches(got, want, dtype, what):
    loss, num, den, ga, gp = got
    want_loss, want_num, want_den, want_ga, want_gp = want
    torch.testing.assert_close(loss.float(), want_loss, rtol=LOSS_RTOL, atol=0, msg=lambda m: f"{what} loss: {m}")
    torch.testing.assert_close(num.float(), want_num, rtol=LOSS_RTOL, atol=0, msg=lambda m: f"{what} num: {m}")
    torch.testing.assert_close(den.float(), want_den, rtol=LOSS_RTOL, atol=0, msg=lambda m: f"{what} den: {m}")
    rtol = GRAD_RTOL[torch.float32 if dtype == torch.float64 else dtype]
    for name, g, w in (("grad_anchor", ga, want_ga), ("grad_positive", gp, want_gp)):
        if g is None:
            continue
        scale = w.abs().max().item()
        torch.testing.assert_close(g, w, rtol=rtol, atol=rtol * scale, check_dtype=dtype != torch.float64,
                                   msg=lambda m: f"{what} {name}: {m}")  # fmt: skip


def inputs(shape, k, shared, dtype=torch.float32):
    anchor, positive = torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)
    negatives = torch.randn((k, *shape[1:]) if shared else (k, *shape)).to(dtype)
    return anchor, positive, negatives


# The op tests' shapes, plus ones whose m is a multiple of the vector width (16-byte path),
# spanning several 2048-element tiles, and a batch large enough for groups of several samples.
CUDA_SHAPES = SHAPES + [((3, 8, 24, 32), 10), ((7, 4, 4, 8), 3), ((5, 2, 64, 80), 2)]


@pytest.mark.parametrize("reduction", ["batch", "sample"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_sample"])
@pytest.mark.parametrize("shape,k", CUDA_SHAPES, ids=[f"{'x'.join(map(str, s))}_K{k}" for s, k in CUDA_SHAPES])
def test_fp32_matches_reference(kernels, shape, k, shared, reduction):
    anchor, positive, negatives = inputs(shape, k, shared)
    positive_grad = (sum(shape) + k) % 2 == 0  # half the cases without grad_positive (NULL)
    got = run_kernels(kernels, anchor, positive, negatives, reduction, positive_grad=positive_grad)
    assert_matches(got, reference(anchor, positive, negatives, reduction), torch.float32, f"{shape} K={k}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", ["batch", "sample"])
def test_other_dtypes_match_reference(kernels, dtype, reduction):
    for (shape, k), shared in zip(CUDA_SHAPES[1:4] + CUDA_SHAPES[-3:], [True, False] * 3):
        anchor, positive, negatives = inputs(shape, k, shared, dtype)
        got = run_kernels(kernels, anchor, positive, negatives, reduction)
        assert got[3].dtype == dtype and got[0].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        assert_matches(got, reference(anchor, positive, negatives, reduction), dtype, f"{dtype} {shape}")


def test_scalar_path_and_strided_negatives(kernels):
    """Misaligned pointers take the scalar path; per-sample negatives stored [B, K, ...] use their strides."""
    anchor, positive, negatives = inputs((3, 8, 24, 32), 4, shared=False)
    want = reference(anchor, positive, negatives, "sample")
    assert_matches(run_kernels(kernels, anchor, positive, negatives, "sample", shift=1), want, torch.float32, "shift")
    stored = guarded(negatives.transpose(0, 1).contiguous())  # [B, K, ...] in memory
    m = anchor[0].numel()
    got = run_kernels(kernels, anchor, positive, stored.transpose(0, 1), "sample", neg_strides=(m, 4 * m))
    assert_matches(got, want, torch.float32, "[B, K] storage")


def test_weight_and_grad_scale(kernels):
    anchor, positive, negatives = inputs((4, 3, 5, 8), 3, shared=True)
    got = run_kernels(kernels, anchor, positive, negatives, "batch", weight=0.25, grad_loss=3.0)
    loss, num, den, ga, gp = reference(anchor, positive, negatives, "batch", weight=0.25 * 3.0)
    assert_matches(got, (loss / 3.0, num, den, ga, gp), torch.float32, "weight 0.25, grad 3")


def test_taps_accumulate_into_one_loss(kernels):
    """Two taps launched in order with accumulate = 1 sum their weighted losses."""
    taps = [inputs((2, 3, 4, 4), 2, True), inputs((2, 6, 2, 3), 2, False)]
    weights = [0.5, 2.0]
    loss = torch.zeros(())
    for j, ((a, p, n), w) in enumerate(zip(taps, weights)):
        batch, k, m = a.shape[0], n.shape[0], a[0].numel()
        strides = (m, 0) if n.dim() == a.dim() else (batch * m, m)
        workspace = torch.empty(kernels.csd_contrastive_forward_workspace(0, batch, k, m), dtype=torch.uint8)
        num, den = torch.empty(batch), torch.empty(k, batch)
        check(kernels, kernels.csd_contrastive_forward(
            0, a.data_ptr(), p.data_ptr(), n.data_ptr(), batch, k, m, *strides, 1, 1e-7, w, int(j > 0),
            workspace.data_ptr(), loss.data_ptr(), num.data_ptr(), den.data_ptr(), None))  # fmt: skip
    want = multi_tap_contrastive_reference(*zip(*taps), weights, "sample")
    torch.testing.assert_close(loss, want, rtol=LOSS_RTOL, atol=0)


def test_results_do_not_depend_on_the_schedule(kernels):
    anchor, positive, negatives = inputs((5, 2, 64, 80), 3, shared=True)
    runs = []
    try:
        for offset in range(3):  # every block under each of the three thread orders
            kernels.simt_set_schedule_offset(offset)
            runs.append(run_kernels(kernels, anchor, positive, negatives, "sample"))
    finally:
        kernels.simt_set_schedule_offset(0)
    for run in runs[1:]:
        assert all(torch.equal(x, y) for x, y in zip(run, runs[0]))


def test_finalize_over_many_tiles(kernels):
    """33 tiles per sample: the finalize's block sum gets partials in two warps."""
    anchor, positive, negatives = inputs((2, 4, 128, 130), 2, shared=True)
    got = run_kernels(kernels, anchor, positive, negatives, "batch")
    assert_matches(got, reference(anchor, positive, negatives, "batch"), torch.float32, "33 tiles")


# (old text, new text, anchor shape): each applies once to the .cu.
MUTATIONS = {
    "sign": ("s += fabs(to_acc(x.v[j]) - to_acc(y.v[j]));", "s -= fabs(to_acc(x.v[j]) - to_acc(y.v[j]));", (5, 2, 64, 80)),
    "index": ("load<scalar_t, Aligned>(a + b * g.m + lo, len);\n    for (int64_t t", "load<scalar_t, Aligned>(a + b * g.m, len);\n    for (int64_t t", (5, 2, 64, 80)),
    "barrier": ("  __syncthreads();  // every warp's sums of sample b are in `out`", "", (5, 2, 64, 80)),
    "finalize_barrier": ("  __syncthreads();  // every warp's sum is in warp_sums", "", (2, 4, 128, 130)),
    "backward_barrier": ("  __syncthreads();  // every coefficient of the group is in shared memory", "", (5, 2, 64, 80)),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_mutations_fail(mutation, tmp_path):
    """A sign flip, a wrong index and each missing barrier in the .cu break the comparison."""
    old, new, shape = MUTATIONS[mutation]
    source = SOURCE.read_text()
    assert source.count(old) == 1, f"mutation {mutation!r} no longer applies to {SOURCE.name}"
    lib = bind_contrastive(build(source.replace(old, new), tmp_path))
    anchor, positive, negatives = inputs(shape, 3, shared=True)
    want = reference(anchor, positive, negatives, "sample")
    with pytest.raises(AssertionError):
        assert_matches(run_kernels(lib, anchor, positive, negatives, "sample"), want, torch.float32, mutation)
