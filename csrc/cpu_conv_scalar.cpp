// Portable scalar NHWC conv (any x86-64 or other CPU): one output pixel and 16 output channels
// at a time, fp32 accumulation. The reference path of the dispatch, and the bf16 path where
// AVX512_BF16 is missing.
#include "cpu_conv.h"

namespace csd_cpu {
namespace scalar {

#include "cpu_conv_epilogue.h"

// T: x and w; TO: out and res.
template <typename T, typename TO>
static void conv_rows(const ConvArgs& a, int64_t r0, int64_t r1, float* pool) {
  const int K = a.K, p = K / 2, CB = (a.Cout + 15) / 16;
  const bool bf = sizeof(T) == 2;
  const int cin_w = bf ? (a.Cin + 1) / 2 * 2 : a.Cin;  // bf16 weights are packed in channel pairs
  const T* X = (const T*)a.x;
  const T* Wt = (const T*)a.w;
  for (int64_t row = r0; row < r1; ++row) {
    const int n = (int)(row / a.H), y = (int)(row % a.H);
    int ky_lo, ky_hi;
    tap_range(y, a.H, K, &ky_lo, &ky_hi);
    for (int x = 0; x < a.W; ++x) {
      int kx_lo, kx_hi;
      tap_range(x, a.W, K, &kx_lo, &kx_hi);
      for (int cb = 0; cb < CB; ++cb) {
        float acc[16];
        for (int l = 0; l < 16; ++l) acc[l] = a.bias ? a.bias[cb * 16 + l] : 0.f;
        for (int ky = ky_lo; ky < ky_hi; ++ky)
          for (int kx = kx_lo; kx < kx_hi; ++kx) {
            const T* xp = X + n * a.xn + (int64_t)(y + ky - p) * a.xy + (int64_t)(x + kx - p) * a.xx;
            const T* wp = Wt + ((int64_t)cb * K * K + ky * K + kx) * cin_w * 16;
            for (int ci = 0; ci < a.Cin; ++ci) {
              const float xv = load_val(xp + ci * a.xc);
              for (int l = 0; l < 16; ++l) {
                const int64_t wi = bf ? ((int64_t)(ci / 2) * 16 + l) * 2 + ci % 2 : (int64_t)ci * 16 + l;
                acc[l] += xv * load_val(wp + wi);
              }
            }
          }
        for (int l = 0; l < 16; ++l) store_lane<TO>(a, n, y, x, cb * 16 + l, acc[l], pool);
      }
    }
  }
}

void conv_rows_f32(const ConvArgs& a, int64_t r0, int64_t r1, float* pool) { conv_rows<float, float>(a, r0, r1, pool); }
void conv_rows_bf16(const ConvArgs& a, int64_t r0, int64_t r1, float* pool) { conv_rows<uint16_t, uint16_t>(a, r0, r1, pool); }
void conv_rows_f32_out_bf16(const ConvArgs& a, int64_t r0, int64_t r1, float* pool) {
  conv_rows<float, uint16_t>(a, r0, r1, pool);
}
void conv_rows_bf16_out_f32(const ConvArgs& a, int64_t r0, int64_t r1, float* pool) {
  conv_rows<uint16_t, float>(a, r0, r1, pool);
}

}  // namespace scalar
}  // namespace csd_cpu
