// Register-blocked NHWC conv over a vector traits struct ``V`` (cpu_conv_avx2.cpp,
// cpu_conv_avx512.cpp define it, then include this inside their own namespace).
//
// V: reg (L fp32 lanes), zero(), load(const float*), bcast(const float*), fma(a, b, c) = a*b + c,
// add, max0, set1, store(float*, reg), load_t/store_t for the activation type T (float, and
// uint16_t bf16 where the ISA has it).
//
// Blocking: a row of output pixels is cut into blocks of NP pixels; for each group of NB
// 16-channel output blocks (NV = NB * 16 / L registers per pixel) the kernel keeps NP x NV
// accumulators in registers, walks the valid taps and input channels, broadcasting one input
// value per pixel against NV weight vectors ([CB][K*K][Cin][16] packing), then runs the
// epilogue. Border pixels (where some kx taps fall outside the image) are blocks of one pixel with
// their own tap range, so the inner loop never tests bounds.
#pragma once
#include "cpu_conv_epilogue.h"

typedef typename V::reg reg;

// Blocks of fewer than 4 pixels (image borders, row remainders) would wait on the FMA latency:
// they accumulate into S interleaved partial sums over input channels instead.
template <int NP>
constexpr int splits() { return NP >= 4 ? 1 : NP == 1 ? 4 : 2; }

template <int S, int NP, int NV>
static inline void zero_parts(reg (&part)[S][NP][NV]) {
  for (int s = 0; s < S; ++s)
    for (int q = 0; q < NP; ++q)
      for (int v = 0; v < NV; ++v) part[s][q][v] = V::zero();
}

template <int S, int NP, int NV>
static inline void sum_parts(const reg (&part)[S][NP][NV], reg (&acc)[NP][NV]) {
  for (int q = 0; q < NP; ++q)
    for (int v = 0; v < NV; ++v) {
      acc[q][v] = part[0][q][v];
      for (int s = 1; s < S; ++s) acc[q][v] = V::add(acc[q][v], part[s][q][v]);
    }
}

// Accumulate NP pixels x NV vectors of fp32 products (fp32 activations and weights); CIN > 0 fixes
// the input channel count at compile time (fully unrolled channel loop), 0 reads it from ``a``.
template <int NP, int NV, int CIN>
static inline void block_f32(const csd_cpu::ConvArgs& a, const float* const* xr, int ky_lo, int ky_hi, int x0,
                             int kx_lo, int kx_hi, const float* wg, int64_t wcob, reg (&acc)[NP][NV]) {
  constexpr int VPB = 16 / V::L, S = splits<NP>();
  const int Cin = CIN ? CIN : a.Cin, K = a.K, p = K / 2;
  const int64_t sx = a.xx;
  reg part[S][NP][NV];
  zero_parts(part);
  for (int ky = ky_lo; ky < ky_hi; ++ky)
    for (int kx = kx_lo; kx < kx_hi; ++kx) {
      const float* xp = xr[ky] + (int64_t)(x0 + kx - p) * sx;
      const float* wp = wg + (int64_t)(ky * K + kx) * Cin * 16;
      int ci = 0;
      for (; ci + S <= Cin; ci += S)
        for (int s = 0; s < S; ++s) {
          reg wv[NV];
          for (int v = 0; v < NV; ++v) wv[v] = V::load(wp + (v / VPB) * wcob + (v % VPB) * V::L + (ci + s) * 16);
          for (int q = 0; q < NP; ++q) {
            const reg b = V::bcast(xp + q * sx + ci + s);
            for (int v = 0; v < NV; ++v) part[s][q][v] = V::fma(b, wv[v], part[s][q][v]);
          }
        }
      for (; ci < Cin; ++ci) {
        reg wv[NV];
        for (int v = 0; v < NV; ++v) wv[v] = V::load(wp + (v / VPB) * wcob + (v % VPB) * V::L + ci * 16);
        for (int q = 0; q < NP; ++q) {
          const reg b = V::bcast(xp + q * sx + ci);
          for (int v = 0; v < NV; ++v) part[0][q][v] = V::fma(b, wv[v], part[0][q][v]);
        }
      }
    }
  sum_parts(part, acc);
}

// The epilogue of NP pixels (x0..x0+NP-1 of row y) for output channels co..co+L-1 (``acc[q]``),
// out and res of type T:
// everything that depends only on co (bias, the shuffle's destination channel and sub-position,
// whether a whole vector can be stored) is worked out once for the NP pixels.
template <typename T, int NP, int NV>
static inline void epilogue(const csd_cpu::ConvArgs& a, int n, int y, int x0, int co, reg (&acc)[NP][NV], int v,
                            float* pool) {
  if (co >= a.Cout) return;
  const reg bias = a.bias ? V::load(a.bias + co) : V::zero();
  const int r = a.shuffle, cs = a.Cout / (r * r);
  const bool whole = co + V::L <= a.Cout && (r == 1 || cs % V::L == 0);
  if (whole && !a.mean_out && a.oc == 1 && (!a.res || a.rc == 1)) {
    const int ij = r == 1 ? 0 : co / cs, c = r == 1 ? co : co % cs;
    const int64_t oy = (int64_t)y * r + ij / r, dx = ij % r;
    T* out = (T*)a.out + n * a.on + c + oy * a.oy + dx * a.ox;
    const T* res = a.res ? (const T*)a.res + n * a.rn + c + oy * a.ry + dx * a.rx : nullptr;
    const reg scale = V::set1(a.res_scale);
    reg sum = V::zero();
    for (int q = 0; q < NP; ++q) {
      const int64_t ox = (int64_t)(x0 + q) * r;
      reg t = V::add(acc[q][v], bias);
      if (res) t = V::fma(t, scale, V::load_t(res + ox * a.rx));
      if (a.relu) t = V::max0(t);
      V::store_t(out + ox * a.ox, t);
      sum = V::add(sum, t);
    }
    if (pool) {
      float* pp = pool + (int64_t)n * cs + c;
      V::store(pp, V::add(V::load(pp), sum));
    }
    return;
  }
  for (int q = 0; q < NP; ++q) {
    float tmp[V::L];
    V::store(tmp, V::add(acc[q][v], bias));
    for (int l = 0; l < V::L; ++l) store_lane<T>(a, n, y, x0 + q, co + l, tmp[l], pool);
  }
}

// One row of output pixels for the output-channel group starting at block cb0, with
// ``Block<NP, NV>::run(a, xr, ky_lo, ky_hi, x0, kx_lo, kx_hi, wg, wcob, acc)`` accumulating;
// inputs of type T, out and res of type TO.
template <typename T, template <int, int> class Block, int NP, int NV, typename TO = T>
struct RowRunner {
  static constexpr int VPB = 16 / V::L;
  typedef typename Block<1, NV>::wtype WT;

  template <int P>
  static inline void pixels(const csd_cpu::ConvArgs& a, const T* const* xr, int ky_lo, int ky_hi, int n, int y, int x0,
                            int kx_lo, int kx_hi, const WT* wg, int64_t wcob, int cb0, float* pool) {
    reg acc[P][NV];
    Block<P, NV>::run(a, xr, ky_lo, ky_hi, x0, kx_lo, kx_hi, wg, wcob, acc);
    for (int v = 0; v < NV; ++v) epilogue<TO, P, NV>(a, n, y, x0, (cb0 + v / VPB) * 16 + (v % VPB) * V::L, acc, v, pool);
  }

  // Interior pixels [x0, x1) in blocks of NP, the remainder in one smaller block.
  template <int P>
  static inline void tail(const csd_cpu::ConvArgs& a, const T* const* xr, int ky_lo, int ky_hi, int n, int y, int x0,
                          int count, const WT* wg, int64_t wcob, int cb0, float* pool) {
    if constexpr (P >= 1) {
      if (count == P) {
        pixels<P>(a, xr, ky_lo, ky_hi, n, y, x0, 0, a.K, wg, wcob, cb0, pool);
        return;
      }
      tail<P - 1>(a, xr, ky_lo, ky_hi, n, y, x0, count, wg, wcob, cb0, pool);
    }
  }

  static void row(const csd_cpu::ConvArgs& a, const T* const* xr, int ky_lo, int ky_hi, int n, int y,
                  const WT* w, int64_t wcob, int CB, float* pool) {
    const int p = a.K / 2, W = a.W;
    const int left = p < W ? p : W, right = W - p > left ? W - p : left;
    for (int cb0 = 0; cb0 < CB; cb0 += NV / VPB) {
      const WT* wg = w + cb0 * wcob;
      for (int x = 0; x < left; ++x) {
        int lo, hi;
        tap_range(x, W, a.K, &lo, &hi);
        pixels<1>(a, xr, ky_lo, ky_hi, n, y, x, lo, hi, wg, wcob, cb0, pool);
      }
      int x = left;
      for (; x + NP <= right; x += NP) pixels<NP>(a, xr, ky_lo, ky_hi, n, y, x, 0, a.K, wg, wcob, cb0, pool);
      if (x < right) tail<NP - 1>(a, xr, ky_lo, ky_hi, n, y, x, right - x, wg, wcob, cb0, pool);
      for (x = right; x < W; ++x) {
        int lo, hi;
        tap_range(x, W, a.K, &lo, &hi);
        pixels<1>(a, xr, ky_lo, ky_hi, n, y, x, lo, hi, wg, wcob, cb0, pool);
      }
    }
  }

  // Two output rows (y, y+1) of a 3x3 conv, one register per pixel and row (NV == 1): each input
  // value is broadcast once for both rows (taps ky and ky - 1), halving the loads per FMA.
  template <int P>
  static inline void pixels2(const csd_cpu::ConvArgs& a, const T* const* xr4, int n, int y, int x0, const WT* wg,
                             int cb0, float* pool) {
    reg acc[2][P][NV];
    Block<P, NV>::run2(a, xr4, x0, wg, acc);
    epilogue<TO, P, NV>(a, n, y, x0, cb0 * 16, acc[0], 0, pool);
    epilogue<TO, P, NV>(a, n, y + 1, x0, cb0 * 16, acc[1], 0, pool);
  }

  template <int P>
  static inline void tail2(const csd_cpu::ConvArgs& a, const T* const* xr4, int n, int y, int x0, int count,
                           const WT* wg, int cb0, float* pool) {
    if constexpr (P >= 1) {
      if (count == P) return pixels2<P>(a, xr4, n, y, x0, wg, cb0, pool);
      tail2<P - 1>(a, xr4, n, y, x0, count, wg, cb0, pool);
    }
  }

  static void row_pair(const csd_cpu::ConvArgs& a, const T* const* xr4, int n, int y, const WT* w, int64_t wcob, int CB,
                       float* pool) {
    const int W = a.W, left = 1 < W ? 1 : W, right = W - 1 > left ? W - 1 : left;
    const int lo0 = xr4[0] ? 0 : 1, hi1 = xr4[3] ? 3 : 2;  // ky ranges: row y [lo0, 3), row y + 1 [0, hi1)
    for (int cb0 = 0; cb0 < CB; ++cb0) {
      const WT* wg = w + cb0 * wcob;
      auto border = [&](int x) {  // one row at a time: xr[ky] is input row y + ky - 1 of output row y
        int lo, hi;
        tap_range(x, W, 3, &lo, &hi);
        pixels<1>(a, xr4, lo0, 3, n, y, x, lo, hi, wg, wcob, cb0, pool);
        pixels<1>(a, xr4 + 1, 0, hi1, n, y + 1, x, lo, hi, wg, wcob, cb0, pool);
      };
      for (int x = 0; x < left; ++x) border(x);
      int x = left;
      for (; x + NP <= right; x += NP) pixels2<NP>(a, xr4, n, y, x, wg, cb0, pool);
      if (x < right) tail2<NP - 1>(a, xr4, n, y, x, right - x, wg, cb0, pool);
      for (x = right; x < W; ++x) border(x);
    }
  }

  // Rows [r0, r1) of the flattened (n, y) output rows.
  static void rows(const csd_cpu::ConvArgs& a, int64_t r0, int64_t r1, int64_t wcob, float* pool) {
    const int K = a.K, p = K / 2, CB = (a.Cout + 15) / 16;
    const T* X = (const T*)a.x;
    const T* xr[16];
    for (int64_t rr = r0; rr < r1; ++rr) {
      const int n = (int)(rr / a.H), y = (int)(rr % a.H);
      if constexpr (NV == 1 && V::L == 16) {
        if (K == 3 && Block<1, NV>::pairs_ok(a) && rr + 1 < r1 && y + 1 < a.H) {
          const T* xr4[4];
          for (int i = 0; i < 4; ++i) {
            const int iy = y - 1 + i;
            xr4[i] = iy >= 0 && iy < a.H ? X + n * a.xn + (int64_t)iy * a.xy : nullptr;
          }
          row_pair(a, xr4, n, y, (const WT*)a.w, wcob, CB, pool);
          ++rr;
          continue;
        }
      }
      int ky_lo, ky_hi;
      tap_range(y, a.H, K, &ky_lo, &ky_hi);
      for (int ky = ky_lo; ky < ky_hi; ++ky) xr[ky] = X + n * a.xn + (int64_t)(y + ky - p) * a.xy;
      row(a, xr, ky_lo, ky_hi, n, y, (const WT*)a.w, wcob, CB, pool);
    }
  }
};

// The pair step of ``run2``: for the input row feeding tap ky of row y (weights w0, if A) and tap
// ky - 1 of row y + 1 (weights w1, if B), every channel of every pixel broadcast once.
template <bool A, bool B, int NP, int CIN>
static inline void pair_step_f32(int cin, const float* xp, int64_t sx, const float* w0, const float* w1,
                                 reg (&acc)[2][NP][1]) {
  const int Cin = CIN ? CIN : cin;
  for (int ci = 0; ci < Cin; ++ci) {
    const reg wa = A ? V::load(w0 + ci * 16) : V::zero(), wb = B ? V::load(w1 + ci * 16) : V::zero();
    for (int q = 0; q < NP; ++q) {
      const reg b = V::bcast(xp + q * sx + ci);
      if (A) acc[0][q][0] = V::fma(b, wa, acc[0][q][0]);
      if (B) acc[1][q][0] = V::fma(b, wb, acc[1][q][0]);
    }
  }
}

template <int CIN>
struct BlockF32 {
  template <int NP, int NV>
  struct B {
    typedef float wtype;
    static inline void run(const csd_cpu::ConvArgs& a, const float* const* xr, int ky_lo, int ky_hi, int x0, int kx_lo,
                           int kx_hi, const float* wg, int64_t wcob, reg (&acc)[NP][NV]) {
      block_f32<NP, NV, CIN>(a, xr, ky_lo, ky_hi, x0, kx_lo, kx_hi, wg, wcob, acc);
    }
    static inline bool pairs_ok(const csd_cpu::ConvArgs&) { return true; }
    // Rows y and y + 1 of interior pixels x0..x0+NP-1 from input rows xr4 = y-1..y+2 (null outside).
    static inline void run2(const csd_cpu::ConvArgs& a, const float* const* xr4, int x0, const float* wg,
                            reg (&acc)[2][NP][1]) {
      const int cin = a.Cin;
      const int64_t sx = a.xx, tap = (int64_t)cin * 16;
      for (int j = 0; j < 2; ++j)
        for (int q = 0; q < NP; ++q) acc[j][q][0] = V::zero();
      for (int kx = 0; kx < 3; ++kx) {
        const int64_t off = (int64_t)(x0 + kx - 1) * sx;
        if (xr4[0]) pair_step_f32<true, false, NP, CIN>(cin, xr4[0] + off, sx, wg + kx * tap, nullptr, acc);
        for (int i = 1; i < 3; ++i)
          pair_step_f32<true, true, NP, CIN>(cin, xr4[i] + off, sx, wg + (i * 3 + kx) * tap, wg + ((i - 1) * 3 + kx) * tap, acc);
        if (xr4[3]) pair_step_f32<false, true, NP, CIN>(cin, xr4[3] + off, sx, nullptr, wg + (6 + kx) * tap, acc);
      }
    }
  };
};

// fp32 rows with NB 16-channel blocks per group where CB allows (NB | CB); out and res of type TO.
template <int CIN, int NP1, int NP2, int NP3, int NP4, typename TO = float>
static void rows_f32_cin(const csd_cpu::ConvArgs& a, int64_t r0, int64_t r1, float* pool, int max_nb) {
  constexpr int VPB = 16 / V::L;
  const int CB = (a.Cout + 15) / 16;
  const int64_t wcob = (int64_t)a.K * a.K * a.Cin * 16;
  typedef BlockF32<CIN> F;
  if (max_nb >= 4 && CB % 4 == 0) return RowRunner<float, F::template B, NP4, 4 * VPB, TO>::rows(a, r0, r1, wcob, pool);
  if (max_nb >= 3 && CB % 3 == 0) return RowRunner<float, F::template B, NP3, 3 * VPB, TO>::rows(a, r0, r1, wcob, pool);
  if (max_nb >= 2 && CB % 2 == 0) return RowRunner<float, F::template B, NP2, 2 * VPB, TO>::rows(a, r0, r1, wcob, pool);
  RowRunner<float, F::template B, NP1, VPB, TO>::rows(a, r0, r1, wcob, pool);
}

// The 16-channel layers of the compact students get a fully unrolled channel loop.
template <int NP1, int NP2, int NP3, int NP4>
static void rows_f32(const csd_cpu::ConvArgs& a, int64_t r0, int64_t r1, float* pool, int max_nb) {
  if (a.Cin == 16) return rows_f32_cin<16, NP1, NP2, NP3, NP4>(a, r0, r1, pool, max_nb);
  rows_f32_cin<0, NP1, NP2, NP3, NP4>(a, r0, r1, pool, max_nb);
}
