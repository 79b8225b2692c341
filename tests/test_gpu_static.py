"""bench/gpu_static.py: the SASS parser, the roofline model, the recorded layer lists, and one real
ahead-of-time sm_90 compile (Triton ships ptxas and cuobjdump: no GPU needed).

Expected values are computed by hand from the stated model (H100: 132 SMs, 989.4 TFLOP/s fp16
dense, 3.35 TB/s, 5.5 TB/s L2, 4 issues/clock/SM at 1.83 GHz), not read from the code.
"""
import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gs():
    spec = importlib.util.spec_from_file_location("gpu_static", ROOT / "bench" / "gpu_static.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_static"] = module  # the process pool pickles its workers by module name
    spec.loader.exec_module(module)
    return module


_SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;                                  /* 0x0 */
        /*0010*/                   S2R R0, SR_CTAID.X ;                                    /* 0x0 */
        /*0020*/                   IMAD R2, R0, 0x3, RZ ;                                  /* 0x0 */
        /*0030*/                   LDGSTS.E.128 [R2], desc[UR4][R4.64] ;                   /* 0x0 */
        /*0040*/                   HGMMA.64x64x16.F32 R24, gdesc[UR8].tnspB, R24 ;        /* 0x0 */
        /*0050*/                   HGMMA.64x32x16.F32 R56, gdesc[UR8].tnspB, R56, gsb0 ; /* 0x0 */
        /*0060*/                   IADD3 R2, R2, 0x1, RZ ;                                 /* 0x0 */
        /*0070*/               @P0 BRA 0x30 ;                                              /* 0x0 */
        /*0080*/                   STL [R1], R2 ;                                          /* 0x0 */
        /*0090*/                   EXIT ;                                                  /* 0x0 */
        /*00a0*/                   BRA 0xa0;                                               /* 0x0 */
"""
_RES = " Function k:\n  REG:128 STACK:16 SHARED:0 LOCAL:8 CONSTANT[0]:600"


def test_parse_sass_finds_the_hgmma_loop_and_normalizes_per_64x64x16(gs):
    stats = gs.parse_sass(_SASS, _RES)
    assert stats["regs"] == 128 and stats["local_bytes"] == 24 and stats["spill_instrs"] == 1
    assert stats["sass_total"] == 11 and stats["hgmma_total"] == 2
    # loop 0x30..0x70: 5 instructions; 64x64x16 + 64x32x16 = 1.5 wgmma of 64x64x16
    assert stats["loop_instrs"] == 5 and stats["loop_hgmma"] == 2
    assert stats["loop_macs_per_warpgroup"] == 64 * 64 * 16 + 64 * 32 * 16
    assert stats["instrs_per_64x64x16"] == pytest.approx(5 / 1.5, abs=0.05)
    unrolled = gs.parse_sass(_SASS.replace("@P0 BRA 0x30", "@P0 BRA 0x90"), _RES)  # a forward branch: no loop
    assert unrolled["loop_instrs"] == 0 and unrolled["instrs_per_64x64x16"] == pytest.approx(11 / 1.5, abs=0.05)


def test_occupancy_counts_registers_per_warp_and_shared_memory(gs):
    # 128 threads: 168 regs -> 168*32 = 5376, rounded to 5376 (a multiple of 256) per warp: 65536 // 21504 = 3
    assert gs.occupancy(168, 0, 128) == 3
    assert gs.occupancy(32, 0, 128) == 16  # 2048 threads
    assert gs.occupancy(32, 100 * 1024, 128) == 2  # 228 KB // (100 KB + 1 KB)
    assert gs.occupancy(255, 0, 512) == 0


def test_roofline_terms_of_a_conv(gs):
    """A 64->64 3x3 conv on 132*128 pixels in one full wave: tensor, HBM, L2 and issue by hand."""
    layer = gs.ConvLayer(c_in=64, c_out=64, k=3, rel=1)
    lr = (132, 128)  # tiles of 1 row x 128: 132 programs, one per SM
    stats = {"regs": 200, "shared_bytes": 100 * 1024, "loop_instrs": 100, "loop_macs_per_warpgroup": 128 * 64 * 64,
             "sass_total": 1100, "l1_cached_loads": False}
    tile = (128, 64, 64, 128, 3, 4)
    est = gs.estimate_conv(layer, "fp16", tile, stats, lr)
    assert est["ctas"] == 132 and est["resident_per_sm"] == 2 and est["wave_eff"] == pytest.approx(0.5)
    macs = 132 * 128 * 64 * 64 * 9
    assert est["terms_us"]["tensor"] == pytest.approx(2 * macs / 989.4e12 * 1e6 / 0.5, rel=1e-2)
    act = 132 * 128 * 64 * 2  # 2.2 MB: the input stays in L2, the output and weights go to HBM
    assert est["terms_us"]["hbm"] == pytest.approx((act + 9 * 64 * 64 * 2) / 3.35e12 * 1e6, rel=1e-2)
    l2 = 132 * 9 * (128 * 64 * 2 + 64 * 64 * 2)  # no L1 reuse: every K step reads its A and B tiles
    assert est["terms_us"]["l2"] == pytest.approx(l2 / 5.5e12 * 1e6, rel=1e-2)
    per_warp = 100 * 9 + 1000  # 9 K steps of one trip each, the rest once
    assert est["terms_us"]["issue"] == pytest.approx(132 * 4 * per_warp / (132 * 4 * 1.83e9) * 1e6 / 0.5, rel=1e-2)
    assert est["us"] == pytest.approx(max(est["terms_us"].values()) + 1.0, abs=0.02)
    cached = gs.estimate_conv(layer, "fp16", tile, dict(stats, l1_cached_loads=True, shared_bytes=40 * 1024), lr)
    footprint = 3 * 130 * 64 * 2  # rows + halo x (cols + halo) x channels, once per program
    assert cached["a_from_l1"] and cached["terms_us"]["l2"] == pytest.approx(132 * (footprint + 9 * 64 * 64 * 2) / 5.5e12 * 1e6, rel=1e-2)


def test_recorded_edsr_plan_has_every_conv_with_its_epilogue(gs):
    layers = gs.student_layers("edsr", 0.25)
    names = [gs._name(l) for l in layers]
    assert len(layers) == 69
    assert names[0] == "3x3 3->64 @1x [mean_in,nchw_in]"
    assert names.count("3x3 64->64 @1x [relu]") == 32 and names.count("3x3 64->64 @1x [res]") == 33
    assert names[-3:] == ["3x3 64->256 @1x [shuffle2]", "3x3 64->256 @2x [shuffle2]", "3x3 64->3 @4x [mean_out,nchw_out]"]
    assert gs.small_out(layers[-1]) and not gs.small_out(layers[1])


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="kernels are interpreted in this process")
def test_tail_kernel_compiles_for_sm90_with_wgmma_and_l1_cached_loads(gs):
    layer = gs.ConvLayer(c_in=64, c_out=3, k=3, rel=4, mean_out=True, out_nchw=True)
    stats = gs._compile_conv((layer, "fp16", (64, 16, 2, 4), (180, 320)))
    assert "error" not in stats, stats
    assert stats["wgmma_in_ptx"] and stats["loop_hgmma"] > 0 and stats["l1_cached_loads"]
    assert stats["spill_instrs"] == 0
    est = gs.estimate_conv(layer, "fp16", (64, 16, 2, 4), stats, (180, 320))
    floor = 720 * 1280 * (64 + 3) * 2 / 3.35e12 * 1e6  # read the HR features once, write the image
    assert est["terms_us"]["hbm"] == pytest.approx(floor, rel=1e-3)


def test_roofline_terms_of_the_persistent_conv(gs):
    """260 tiles of 2 x 32 pixels on 132 programs (one per SM): two tiles for the busiest program,
    the weights read once per program; by hand from the stated model."""
    layer = gs.ConvLayer(c_in=64, c_out=64, k=3, rel=1)
    lr = (8, 2080)  # ceil(8 / 2) * ceil(2080 / 32) = 260 tiles
    stats = {"regs": 128, "shared_bytes": 100 * 1024, "loop_instrs": 800, "sass_total": 1300, "l1_cached_loads": False}
    est = gs.estimate_persistent(layer, "fp16", (64, 32, 1, 2, 4), stats, lr)
    assert est["tiles"] == 260 and est["ctas"] == 132 and est["tiles_per_program"] == 2
    assert est["tile_loop_eff"] == pytest.approx(260 / 264, abs=1e-3)
    macs = 132 * 2 * 64 * 64 * 64 * 9  # the busiest SM runs 2 tiles; every SM is charged as busy
    assert est["terms_us"]["tensor"] == pytest.approx(2 * macs / 989.4e12 * 1e6, rel=1e-2)
    act = 8 * 2080 * 64 * 2  # the input stays in L2; output and weights go to HBM
    assert est["terms_us"]["hbm"] == pytest.approx((act + 9 * 64 * 64 * 2) / 3.35e12 * 1e6, rel=1e-2)
    l2 = 260 * 9 * 64 * 64 * 2 + 132 * 9 * 64 * 64 * 2  # every tap's A tile, the weights once per program
    assert est["terms_us"]["l2"] == pytest.approx(l2 / 5.5e12 * 1e6, rel=1e-2)
    per_warp = 800 * 2 + 500  # two trips of the tile loop, the rest once
    assert est["terms_us"]["issue"] == pytest.approx(4 * per_warp / (4 * 1.83e9) * 1e6, rel=1e-2)
    assert est["us"] == pytest.approx(max(est["terms_us"].values()) + 1.0, abs=0.02)
    cached = gs.estimate_persistent(layer, "fp16", (64, 32, 1, 2, 4), dict(stats, l1_cached_loads=True), lr)
    footprint = (2 + 2) * (32 + 2) * 64 * 2  # a tile plus its halo, once
    assert cached["terms_us"]["l2"] == pytest.approx((260 * footprint + 132 * 9 * 64 * 64 * 2) / 5.5e12 * 1e6, rel=1e-2)
    two_per_sm = gs.estimate_persistent(layer, "fp16", (64, 32, 2, 1, 4), dict(stats, shared_bytes=120 * 1024), lr)
    assert "error" in two_per_sm  # 260 programs need 2 per SM; 2 x 121 KB does not fit in 228 KB


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="kernels are interpreted in this process")
def test_persistent_kernel_compiles_for_sm90_with_the_weights_in_shared_memory_once(gs):
    """The EDSR body conv (fp16, 64 channels, residual): wgmma, no spills, within 227 KB, and the nine
    [64, 64] weight taps copied to shared memory before the tile loop (none inside it)."""
    layer = gs.ConvLayer(c_in=64, c_out=64, k=3, rel=1, residual=True)
    stats = gs._compile_persistent((layer, "fp16", (64, 32, 2, 1, 4), (180, 320)))
    assert "error" not in stats, stats
    assert stats["wgmma_in_ptx"] and stats["loop_hgmma"] == 36 and stats["spill_instrs"] == 0  # 9 taps x 4 k-steps of 16
    assert stats["smem_operands_before_loop"] == 9 and stats["shared_bytes"] <= 227 * 1024
    # 16-byte loads per thread in the loop: the nine A tiles and the residual tile, no weights
    assert 0 < stats["loop_mix"].get("LDG", 0) <= (9 + 1) * 64 * 64 * 2 // (128 * 16)


def test_committed_report_compares_persistent_with_v2_and_the_backend_follows_it(gs):
    """bench/results/gpu_static_sm90.json: every body conv the persistent kernel can run has both
    estimates, and ``MODEL_FASTER`` (what the Triton backend dispatches) is exactly the (C, dtype) whose
    persistent estimate beats v2's on some layer and loses on none; the loss section states
    requested-from-L2 vs unique bytes."""
    import json

    from csd_fast.kernels import conv2d_persistent

    report = json.loads((ROOT / "bench" / "results" / "gpu_static_sm90.json").read_text())
    faster, slower = set(), set()
    for per in report["students"].values():
        for d, v in per.items():
            for r in (r for r in v["layers"] if r["layer"].startswith("3x3 ")):
                c = int(r["layer"].split()[1].split("->")[0])
                if r["layer"].endswith(f"{c}->{c} @1x [relu]") and c <= 64:
                    assert "persistent" in r, r["layer"]
                if "persistent" in r and "us" in r["persistent"]:
                    key = (c, gs.DTYPES[d])
                    if r["persistent"]["us"] < r["us"]:
                        faster.add(key)
                    elif r["persistent"]["us"] > r["us"]:
                        slower.add(key)
                    assert r["dispatch"] == ("persistent" if key in conv2d_persistent.MODEL_FASTER else "v2")
    assert faster or slower
    assert faster.isdisjoint(slower), "the body convs of one width disagree: key MODEL_FASTER on the epilogue too"
    assert conv2d_persistent.MODEL_FASTER == frozenset(faster)
    l2 = report["loss"]["l2_estimate"]
    assert l2["requested_mb"] >= l2["unique_mb"] > 0 and l2["ratio"] == pytest.approx(l2["requested_mb"] / l2["unique_mb"], abs=2e-3)
