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

// Accumulate NP pixels x NV vectors of fp32 products (fp32 activations and weights).
template <int NP, int NV>
static inline void block_f32(const csd_cpu::ConvArgs& a, const float* const* xr, int ky_lo, int ky_hi, int x0,
                             int kx_lo, int kx_hi, const float* wg, int64_t wcob, reg (&acc)[NP][NV]) {
  constexpr int VPB = 16 / V::L, S = splits<NP>();
  const int Cin = a.Cin, K = a.K, p = K / 2;
  const int64_t sx = a.xx;
  reg part[S][NP][NV];
  for (int s = 0; s < S; ++s)
    for (int q = 0; q < NP; ++q)
      for (int v = 0; v < NV; ++v) part[s][q][v] = V::zero();
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
  for (int q = 0; q < NP; ++q)
    for (int v = 0; v < NV; ++v) {
      acc[q][v] = part[0][q][v];
      for (int s = 1; s < S; ++s) acc[q][v] = V::add(acc[q][v], part[s][q][v]);
    }
}

// The epilogue of one accumulator vector: output channels co..co+L-1 of pixel (n, y, x).
template <typename T>
static inline void epilogue(const csd_cpu::ConvArgs& a, int n, int y, int x, int co, reg v, float* pool) {
  if (co >= a.Cout) return;
  if (a.bias) v = V::add(v, V::load(a.bias + co));
  const int r = a.shuffle, cs = a.Cout / (r * r);
  const bool whole = co + V::L <= a.Cout && (r == 1 || cs % V::L == 0);
  if (whole && !a.mean_out && a.oc == 1 && (!a.res || a.rc == 1)) {
    const int ij = co / cs, c = co % cs;
    const int64_t oy = (int64_t)y * r + ij / r, ox = (int64_t)x * r + ij % r;
    if (a.res) v = V::fma(v, V::set1(a.res_scale), V::load_t((const T*)a.res + n * a.rn + c + oy * a.ry + ox * a.rx));
    if (a.relu) v = V::max0(v);
    V::store_t((T*)a.out + n * a.on + c + oy * a.oy + ox * a.ox, v);
    if (pool) {
      float* pp = pool + (int64_t)n * cs + c;
      V::store(pp, V::add(V::load(pp), v));
    }
    return;
  }
  float tmp[V::L];
  V::store(tmp, v);
  for (int l = 0; l < V::L; ++l) store_lane<T>(a, n, y, x, co + l, tmp[l], pool);
}

// One row of output pixels for the output-channel group starting at block cb0, with
// ``Block<NP, NV>::run(a, xr, ky_lo, ky_hi, x0, kx_lo, kx_hi, wg, wcob, acc)`` accumulating.
template <typename T, template <int, int> class Block, int NP, int NV>
struct RowRunner {
  static constexpr int VPB = 16 / V::L;
  typedef typename Block<1, NV>::wtype WT;

  template <int P>
  static inline void pixels(const csd_cpu::ConvArgs& a, const T* const* xr, int ky_lo, int ky_hi, int n, int y, int x0,
                            int kx_lo, int kx_hi, const WT* wg, int64_t wcob, int cb0, float* pool) {
    reg acc[P][NV];
    Block<P, NV>::run(a, xr, ky_lo, ky_hi, x0, kx_lo, kx_hi, wg, wcob, acc);
    for (int q = 0; q < P; ++q)
      for (int v = 0; v < NV; ++v) epilogue<T>(a, n, y, x0 + q, (cb0 + v / VPB) * 16 + (v % VPB) * V::L, acc[q][v], pool);
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

  // Rows [r0, r1) of the flattened (n, y) output rows.
  static void rows(const csd_cpu::ConvArgs& a, int64_t r0, int64_t r1, int64_t wcob, float* pool) {
    const int K = a.K, p = K / 2, CB = (a.Cout + 15) / 16;
    const T* X = (const T*)a.x;
    const T* xr[16];
    for (int64_t rr = r0; rr < r1; ++rr) {
      const int n = (int)(rr / a.H), y = (int)(rr % a.H);
      int ky_lo, ky_hi;
      tap_range(y, a.H, K, &ky_lo, &ky_hi);
      for (int ky = ky_lo; ky < ky_hi; ++ky) xr[ky] = X + n * a.xn + (int64_t)(y + ky - p) * a.xy;
      row(a, xr, ky_lo, ky_hi, n, y, (const WT*)a.w, wcob, CB, pool);
    }
  }
};

template <int NP, int NV>
struct BlockF32 {
  typedef float wtype;
  static inline void run(const csd_cpu::ConvArgs& a, const float* const* xr, int ky_lo, int ky_hi, int x0, int kx_lo,
                         int kx_hi, const float* wg, int64_t wcob, reg (&acc)[NP][NV]) {
    block_f32<NP, NV>(a, xr, ky_lo, ky_hi, x0, kx_lo, kx_hi, wg, wcob, acc);
  }
};

// fp32 rows with NB 16-channel blocks per group where CB allows (NB | CB).
template <int NP1, int NP2, int NP3, int NP4>
static void rows_f32(const csd_cpu::ConvArgs& a, int64_t r0, int64_t r1, float* pool, int max_nb) {
  constexpr int VPB = 16 / V::L;
  const int CB = (a.Cout + 15) / 16;
  const int64_t wcob = (int64_t)a.K * a.K * a.Cin * 16;
  if (max_nb >= 4 && CB % 4 == 0) return RowRunner<float, BlockF32, NP4, 4 * VPB>::rows(a, r0, r1, wcob, pool);
  if (max_nb >= 3 && CB % 3 == 0) return RowRunner<float, BlockF32, NP3, 3 * VPB>::rows(a, r0, r1, wcob, pool);
  if (max_nb >= 2 && CB % 2 == 0) return RowRunner<float, BlockF32, NP2, 2 * VPB>::rows(a, r0, r1, wcob, pool);
  RowRunner<float, BlockF32, NP1, VPB>::rows(a, r0, r1, wcob, pool);
}
