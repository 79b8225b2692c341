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
