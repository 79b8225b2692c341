// AVX-512 NHWC conv: fp32 (FMA, 16 lanes) and bf16 (AVX512_BF16 vdpbf16ps on channel pairs, fp32
// accumulation). Compiled for that ISA by the pragma below; called only after a runtime check
// (cpu_conv.cpp), so the module still loads and runs on any x86-64.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,avx2,bmi2")
#include <immintrin.h>

#include "cpu_conv.h"

namespace csd_cpu {
namespace avx512 {

struct V {
  typedef __m512 reg;
  static constexpr int L = 16;
  static inline reg zero() { return _mm512_setzero_ps(); }
  static inline reg set1(float v) { return _mm512_set1_ps(v); }
  static inline reg load(const float* p) { return _mm512_loadu_ps(p); }
  static inline reg bcast(const float* p) { return _mm512_set1_ps(*p); }
  static inline reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static inline reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static inline reg max0(reg a) { return _mm512_max_ps(a, _mm512_setzero_ps()); }
  static inline void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static inline reg load_t(const float* p) { return _mm512_loadu_ps(p); }
  static inline void store_t(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static inline reg load_t(const uint16_t* p) {
    const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
  }
  static inline void store_t(uint16_t* p, reg v) { _mm256_storeu_si256((__m256i*)p, (__m256i)_mm512_cvtneps_pbh(v)); }
};

#include "cpu_conv_simd.h"

// bf16: weights [CB][K*K][ceil(Cin/2)][16][2]; one 32-bit broadcast of an input channel pair per
// pixel, one vdpbf16ps per (pixel, 16-channel block). An odd last channel pairs with zero.
template <int CIN>
struct BlockBF16 {
 template <int NP, int NV>
 struct B {
  typedef uint16_t wtype;
  static inline __m512bh pair(const uint16_t* p) {
    int32_t v;
    memcpy(&v, p, 4);
    return (__m512bh)_mm512_set1_epi32(v);
  }
  static inline void run(const ConvArgs& a, const uint16_t* const* xr, int ky_lo, int ky_hi, int x0, int kx_lo,
                         int kx_hi, const uint16_t* wg, int64_t wcob, reg (&acc)[NP][NV]) {
    constexpr int S = splits<NP>();
    const int Cin = CIN ? CIN : a.Cin, K = a.K, p = K / 2, pairs = Cin / 2, cin_w = (Cin + 1) / 2 * 2;
    const int64_t sx = a.xx;
    reg part[S][NP][NV];
    zero_parts(part);
    for (int ky = ky_lo; ky < ky_hi; ++ky)
      for (int kx = kx_lo; kx < kx_hi; ++kx) {
        const uint16_t* xp = xr[ky] + (int64_t)(x0 + kx - p) * sx;
        const uint16_t* wp = wg + (int64_t)(ky * K + kx) * cin_w * 16;
        int c2 = 0;
        for (; c2 + S <= pairs; c2 += S)
          for (int s = 0; s < S; ++s) {
            __m512i wv[NV];
            for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_si512(wp + v * wcob + (c2 + s) * 32);
            for (int q = 0; q < NP; ++q) {
              const __m512bh b = pair(xp + q * sx + 2 * (c2 + s));
              for (int v = 0; v < NV; ++v) part[s][q][v] = _mm512_dpbf16_ps(part[s][q][v], b, (__m512bh)wv[v]);
            }
          }
        for (; c2 < pairs; ++c2) {
          __m512i wv[NV];
          for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_si512(wp + v * wcob + c2 * 32);
          for (int q = 0; q < NP; ++q) {
            const __m512bh b = pair(xp + q * sx + 2 * c2);
            for (int v = 0; v < NV; ++v) part[0][q][v] = _mm512_dpbf16_ps(part[0][q][v], b, (__m512bh)wv[v]);
          }
        }
        if (Cin & 1) {
          __m512i wv[NV];
          for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_si512(wp + v * wcob + pairs * 32);
          for (int q = 0; q < NP; ++q) {
            const __m512bh b = (__m512bh)_mm512_set1_epi32((int32_t)xp[q * sx + Cin - 1]);
            for (int v = 0; v < NV; ++v) part[0][q][v] = _mm512_dpbf16_ps(part[0][q][v], b, (__m512bh)wv[v]);
          }
        }
      }
    sum_parts(part, acc);
  }
  static inline bool pairs_ok(const ConvArgs& a) { return a.Cin % 2 == 0; }
  template <bool A, bool B>
  static inline void pair_step(int pairs, const uint16_t* xp, int64_t sx, const uint16_t* w0, const uint16_t* w1,
                               reg (&acc)[2][NP][1]) {
    for (int c2 = 0; c2 < pairs; ++c2) {
      const __m512bh wa = (__m512bh)(A ? _mm512_loadu_si512(w0 + c2 * 32) : _mm512_setzero_si512());
      const __m512bh wb = (__m512bh)(B ? _mm512_loadu_si512(w1 + c2 * 32) : _mm512_setzero_si512());
      for (int q = 0; q < NP; ++q) {
        const __m512bh b = pair(xp + q * sx + 2 * c2);
        if (A) acc[0][q][0] = _mm512_dpbf16_ps(acc[0][q][0], b, wa);
        if (B) acc[1][q][0] = _mm512_dpbf16_ps(acc[1][q][0], b, wb);
      }
    }
  }
  // Rows y and y + 1 of interior pixels (see RowRunner::pixels2); even Cin only.
  static inline void run2(const ConvArgs& a, const uint16_t* const* xr4, int x0, const uint16_t* wg,
                          reg (&acc)[2][NP][1]) {
    const int pairs = (CIN ? CIN : a.Cin) / 2;
    const int64_t sx = a.xx, tap = (int64_t)pairs * 32;
    for (int j = 0; j < 2; ++j)
      for (int q = 0; q < NP; ++q) acc[j][q][0] = V::zero();
    for (int kx = 0; kx < 3; ++kx) {
      const int64_t off = (int64_t)(x0 + kx - 1) * sx;
      if (xr4[0]) pair_step<true, false>(pairs, xr4[0] + off, sx, wg + kx * tap, nullptr, acc);
      for (int i = 1; i < 3; ++i)
        pair_step<true, true>(pairs, xr4[i] + off, sx, wg + (i * 3 + kx) * tap, wg + ((i - 1) * 3 + kx) * tap, acc);
      if (xr4[3]) pair_step<false, true>(pairs, xr4[3] + off, sx, nullptr, wg + (6 + kx) * tap, acc);
    }
  }
 };
};

// Narrow outputs (Cout <= 4: the RGB tail): a 16-channel block would leave 13 of 16 lanes idle, so
// vectorize over input channels instead: per pixel and output channel one fp32 accumulator of
// x[tap, ci..ci+15] * w[co, tap, ci..ci+15], reduced across lanes at the end; 4 pixels at once
// hide the FMA latency. bf16 activations are widened to fp32 (the products are exact either way).
static inline __m512 load_x(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
static inline __m512 load_x(const uint16_t* p, __mmask16 m) {
  const __m512i u = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}

// Sums of 16 vectors at once (``v[4m + l]`` -> lane ``4l + m``): two rounds of 128-bit lane folds
// then one in-lane transpose-add, 15 adds and 30 shuffles instead of 16 separate reductions.
static inline __m512 sum16(const __m512 (&v)[16]) {
  __m512 w[8], z[4];
  for (int k = 0; k < 8; ++k)
    w[k] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0x44), _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0xEE));
  for (int k = 0; k < 4; ++k)
    z[k] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * k], w[2 * k + 1], 0x88), _mm512_shuffle_f32x4(w[2 * k], w[2 * k + 1], 0xDD));
  const __m512 p0 = _mm512_add_ps(_mm512_unpacklo_ps(z[0], z[1]), _mm512_unpackhi_ps(z[0], z[1]));
  const __m512 p1 = _mm512_add_ps(_mm512_unpacklo_ps(z[2], z[3]), _mm512_unpackhi_ps(z[2], z[3]));
  return _mm512_add_ps(_mm512_shuffle_ps(p0, p1, 0x44), _mm512_shuffle_ps(p0, p1, 0xEE));
}

static inline void store4(float* p, __m128 v) { _mm_storeu_ps(p, v); }
static inline void store4(uint16_t* p, __m128 v) { _mm_storel_epi64((__m128i*)p, (__m128i)_mm_cvtneps_pbh(v)); }

// The epilogue of 4 pixels x NCO channels into rows of unit pixel stride (the NCHW tail): bias and
// mean added as one vector, then 4 pixels per channel stored at once.
template <typename T, int NCO>
static inline void narrow_store4(const ConvArgs& a, int n, int y, int x0, const __m512 (&acc)[4][NCO]) {
  __m512 v[16];
  for (int q = 0; q < 4; ++q)
    for (int c = 0; c < 4; ++c) v[q * 4 + c] = c < NCO ? acc[q][c] : _mm512_setzero_ps();
  float add[16] = {0};
  for (int c = 0; c < NCO; ++c)
    for (int q = 0; q < 4; ++q) add[4 * c + q] = (a.bias ? a.bias[c] : 0.f) + (a.mean_out ? a.mean_out[c] : 0.f);
  __m512 s = _mm512_add_ps(sum16(v), _mm512_loadu_ps(add));
  if (a.relu && !a.mean_out) s = _mm512_max_ps(s, _mm512_setzero_ps());
  else if (a.relu) {  // relu before the mean: redo in the per-lane order
    float t[16];
    _mm512_storeu_ps(t, _mm512_sub_ps(s, _mm512_loadu_ps(add)));
    for (int c = 0; c < NCO; ++c)
      for (int q = 0; q < 4; ++q) store_lane<T>(a, n, y, x0 + q, c, t[4 * c + q] + (a.bias ? a.bias[c] : 0.f), nullptr);
    return;
  }
  T* out = (T*)a.out + n * a.on + (int64_t)y * a.oy + x0;
  for (int c = 0; c < NCO; ++c) {
    const __m128 lane = c == 0 ? _mm512_castps512_ps128(s) : c == 1 ? _mm512_extractf32x4_ps(s, 1)
                      : c == 2 ? _mm512_extractf32x4_ps(s, 2) : _mm512_extractf32x4_ps(s, 3);
    store4(out + c * a.oc, lane);
  }
}

template <typename T, int NCO, int NP>
static inline void narrow_finish(const ConvArgs& a, int n, int y, int x0, const __m512 (&acc)[NP][NCO], float* pool) {
  if constexpr (NP == 4) {
    if (!a.res && !pool && a.shuffle == 1 && a.ox == 1) return narrow_store4<T, NCO>(a, n, y, x0, acc);
  }
  for (int q = 0; q < NP; ++q)
    for (int c = 0; c < NCO; ++c)
      store_lane<T>(a, n, y, x0 + q, c, _mm512_reduce_add_ps(acc[q][c]) + (a.bias ? a.bias[c] : 0.f), pool);
}

template <typename T, typename TO, int NCO, int NP>
static inline void narrow_pixels(const ConvArgs& a, const T* X, const float* wt, int CV, __mmask16 last, int n, int y,
                                 int ky_lo, int ky_hi, int x0, int kx_lo, int kx_hi, float* pool) {
  const int K = a.K, p = K / 2, KK = K * K;
  __m512 acc[NP][NCO];
  for (int q = 0; q < NP; ++q)
    for (int c = 0; c < NCO; ++c) acc[q][c] = _mm512_setzero_ps();
  for (int ky = ky_lo; ky < ky_hi; ++ky)
    for (int kx = kx_lo; kx < kx_hi; ++kx) {
      const T* xp = X + n * a.xn + (int64_t)(y + ky - p) * a.xy + (int64_t)(x0 + kx - p) * a.xx;
      const float* wp = wt + (int64_t)(ky * K + kx) * CV * 16;
      for (int cv = 0; cv < CV; ++cv) {
        const __mmask16 m = cv == CV - 1 ? last : (__mmask16)0xffff;
        __m512 xv[NP];
        for (int q = 0; q < NP; ++q) xv[q] = load_x(xp + q * a.xx + cv * 16, m);
        for (int c = 0; c < NCO; ++c) {
          const __m512 wv = _mm512_loadu_ps(wp + (int64_t)c * KK * CV * 16 + cv * 16);
          for (int q = 0; q < NP; ++q) acc[q][c] = _mm512_fmadd_ps(xv[q], wv, acc[q][c]);
        }
      }
    }
  narrow_finish<TO, NCO, NP>(a, n, y, x0, acc, pool);
}

// 3x3 interior blocks of 4 pixels: per input row the 6 pixels x0-1..x0+4 are loaded (and widened)
// once for the three kx taps. Returns where the blocks stopped.
template <typename T, typename TO, int NCO, int CV>
static int narrow_interior3(const ConvArgs& a, const T* X, const float* wt, __mmask16 last, int n, int y, int ky_lo,
                            int ky_hi, int x0, int right, float* pool) {
  for (; x0 + 4 <= right; x0 += 4) {
    __m512 acc[4][NCO];
    for (int q = 0; q < 4; ++q)
      for (int c = 0; c < NCO; ++c) acc[q][c] = _mm512_setzero_ps();
    for (int ky = ky_lo; ky < ky_hi; ++ky) {
      const T* row = X + n * a.xn + (int64_t)(y + ky - 1) * a.xy + (int64_t)(x0 - 1) * a.xx;
      for (int cv = 0; cv < CV; ++cv) {
        const __mmask16 m = cv == CV - 1 ? last : (__mmask16)0xffff;
        __m512 xv[6];
        for (int i = 0; i < 6; ++i) xv[i] = load_x(row + i * a.xx + cv * 16, m);
        for (int kx = 0; kx < 3; ++kx)
          for (int c = 0; c < NCO; ++c) {
            const __m512 wv = _mm512_loadu_ps(wt + ((int64_t)(c * 9 + ky * 3 + kx) * CV + cv) * 16);
            for (int q = 0; q < 4; ++q) acc[q][c] = _mm512_fmadd_ps(xv[q + kx], wv, acc[q][c]);
          }
      }
    }
    narrow_finish<TO, NCO, 4>(a, n, y, x0, acc, pool);
  }
  return x0;
}

template <typename T, typename TO, int NCO>
static void rows_narrow(const ConvArgs& a, int64_t r0, int64_t r1, float* pool) {
  const int K = a.K, KK = K * K, Cin = a.Cin, CV = (Cin + 15) / 16, p = K / 2, W = a.W;
  const bool bf = sizeof(T) == 2;
  const int cin_w = bf ? (Cin + 1) / 2 * 2 : Cin;
  const __mmask16 last = (__mmask16)(Cin % 16 ? (1u << (Cin % 16)) - 1 : 0xffffu);
  // weights as [co][tap][ci] fp32, ci padded to CV*16 with zeros
  float wt[4 * 9 * 64];
  memset(wt, 0, sizeof(float) * NCO * KK * CV * 16);
  for (int c = 0; c < NCO; ++c)
    for (int t = 0; t < KK; ++t)
      for (int ci = 0; ci < Cin; ++ci) {
        const int64_t wi = bf ? (((int64_t)t * cin_w / 2 + ci / 2) * 16 + c) * 2 + ci % 2 : ((int64_t)t * Cin + ci) * 16 + c;
        wt[((int64_t)c * KK + t) * CV * 16 + ci] = bf ? bf16_to_f32(((const uint16_t*)a.w)[wi]) : ((const float*)a.w)[wi];
      }
  const T* X = (const T*)a.x;
  const int left = p < W ? p : W, right = W - p > left ? W - p : left;
  for (int64_t rr = r0; rr < r1; ++rr) {
    const int n = (int)(rr / a.H), y = (int)(rr % a.H);
    int ky_lo, ky_hi, lo, hi;
    tap_range(y, a.H, K, &ky_lo, &ky_hi);
    int x = 0;
    for (; x < left; ++x) {
      tap_range(x, W, K, &lo, &hi);
      narrow_pixels<T, TO, NCO, 1>(a, X, wt, CV, last, n, y, ky_lo, ky_hi, x, lo, hi, pool);
    }
    if (K == 3 && CV == 1) x = narrow_interior3<T, TO, NCO, 1>(a, X, wt, last, n, y, ky_lo, ky_hi, x, right, pool);
    else if (K == 3 && CV == 2) x = narrow_interior3<T, TO, NCO, 2>(a, X, wt, last, n, y, ky_lo, ky_hi, x, right, pool);
    for (; x + 4 <= right; x += 4) narrow_pixels<T, TO, NCO, 4>(a, X, wt, CV, last, n, y, ky_lo, ky_hi, x, 0, K, pool);
    for (; x < W; ++x) {
      tap_range(x, W, K, &lo, &hi);
      narrow_pixels<T, TO, NCO, 1>(a, X, wt, CV, last, n, y, ky_lo, ky_hi, x, lo, hi, pool);
    }
  }
}

// Inputs of type T, out and res of type TO.
template <typename T, typename TO>
static bool narrow(const ConvArgs& a, int64_t r0, int64_t r1, float* pool) {
  if (a.Cin > 64 || a.K > 3 || a.Cout > 4) return false;
  if (a.Cout == 3) rows_narrow<T, TO, 3>(a, r0, r1, pool);
  else if (a.Cout == 1) rows_narrow<T, TO, 1>(a, r0, r1, pool);
  else if (a.Cout == 2) rows_narrow<T, TO, 2>(a, r0, r1, pool);
  else rows_narrow<T, TO, 4>(a, r0, r1, pool);
  return true;
}

void conv_rows_f32(const ConvArgs& a, int64_t r0, int64_t r1, float* pool) {
  if (!narrow<float, float>(a, r0, r1, pool)) rows_f32<12, 8, 8, 6>(a, r0, r1, pool, 4);
}

// The fp32 head of a bf16 model (3 input channels): no unrolled channel loop.
void conv_rows_f32_out_bf16(const ConvArgs& a, int64_t r0, int64_t r1, float* pool) {
  if (!narrow<float, uint16_t>(a, r0, r1, pool)) rows_f32_cin<0, 12, 8, 8, 6, uint16_t>(a, r0, r1, pool, 4);
}

template <int CIN, typename TO>
static void rows_bf16(const ConvArgs& a, int64_t r0, int64_t r1, float* pool) {
  const int CB = (a.Cout + 15) / 16;
  const int64_t wcob = (int64_t)a.K * a.K * ((a.Cin + 1) / 2 * 2) * 16;
  typedef BlockBF16<CIN> F;
  if (CB % 4 == 0) return RowRunner<uint16_t, F::template B, 6, 4, TO>::rows(a, r0, r1, wcob, pool);
  if (CB % 3 == 0) return RowRunner<uint16_t, F::template B, 8, 3, TO>::rows(a, r0, r1, wcob, pool);
  if (CB % 2 == 0) return RowRunner<uint16_t, F::template B, 8, 2, TO>::rows(a, r0, r1, wcob, pool);
  RowRunner<uint16_t, F::template B, 12, 1, TO>::rows(a, r0, r1, wcob, pool);
}

void conv_rows_bf16(const ConvArgs& a, int64_t r0, int64_t r1, float* pool) {
  if (narrow<uint16_t, uint16_t>(a, r0, r1, pool)) return;
  if (a.Cin == 16) return rows_bf16<16, uint16_t>(a, r0, r1, pool);
  rows_bf16<0, uint16_t>(a, r0, r1, pool);
}

// bf16 products written in fp32 (the tail into the caller's fp32 image: no rounding to bf16 there).
void conv_rows_bf16_out_f32(const ConvArgs& a, int64_t r0, int64_t r1, float* pool) {
  if (!narrow<uint16_t, float>(a, r0, r1, pool)) rows_bf16<0, float>(a, r0, r1, pool);
}

}  // namespace avx512
}  // namespace csd_cpu
