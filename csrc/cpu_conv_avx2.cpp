// AVX2 + FMA NHWC fp32 conv (8 lanes; a 16-channel weight block is two registers). Compiled for
// that ISA by the pragma below and called only after a runtime check (cpu_conv.cpp).
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#include "cpu_conv.h"

namespace csd_cpu {
namespace avx2 {

struct V {
  typedef __m256 reg;
  static constexpr int L = 8;
  static inline reg zero() { return _mm256_setzero_ps(); }
  static inline reg set1(float v) { return _mm256_set1_ps(v); }
  static inline reg load(const float* p) { return _mm256_loadu_ps(p); }
  static inline reg bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static inline reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static inline reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static inline reg max0(reg a) { return _mm256_max_ps(a, _mm256_setzero_ps()); }
  static inline void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static inline reg load_t(const float* p) { return _mm256_loadu_ps(p); }
  static inline void store_t(float* p, reg v) { _mm256_storeu_ps(p, v); }
};

#include "cpu_conv_simd.h"

// 16 ymm registers: 6 pixels x 2 vectors of accumulators (one 16-channel block at a time).
void conv_rows_f32(const ConvArgs& a, int64_t r0, int64_t r1, float* pool) { rows_f32<6, 6, 6, 6>(a, r0, r1, pool, 1); }

}  // namespace avx2
}  // namespace csd_cpu
