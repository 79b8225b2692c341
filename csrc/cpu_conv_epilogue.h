// Scalar pieces shared by every ISA of the NHWC conv (see cpu_conv.h): bf16 <-> fp32 and the
// per-lane epilogue. Include inside the ISA's namespace (no std templates, nothing to link).
#pragma once
#include "cpu_conv.h"

static inline float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, as torch's float -> bfloat16 conversion.
static inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static inline float load_val(const float* p) { return *p; }
static inline float load_val(const uint16_t* p) { return bf16_to_f32(*p); }
static inline void store_val(float* p, float v) { *p = v; }
static inline void store_val(uint16_t* p, float v) { *p = f32_to_bf16(v); }

// The epilogue of one conv output channel ``co`` (packed order) at LR pixel (n, y, x); ``v``
// already holds the bias. Lanes past Cout (block padding) are dropped.
template <typename T>
static inline void store_lane(const csd_cpu::ConvArgs& a, int n, int y, int x, int co, float v, float* pool) {
  if (co >= a.Cout) return;
  const int r = a.shuffle, cs = a.Cout / (r * r), ij = r == 1 ? 0 : co / cs, c = r == 1 ? co : co % cs;
  const int64_t oy = (int64_t)y * r + ij / r, ox = (int64_t)x * r + ij % r;
  if (a.res) v = load_val((const T*)a.res + n * a.rn + c * a.rc + oy * a.ry + ox * a.rx) + a.res_scale * v;
  if (a.relu) v = v > 0.f ? v : 0.f;
  if (a.mean_out) v += a.mean_out[c];
  store_val((T*)a.out + n * a.on + c * a.oc + oy * a.oy + ox * a.ox, v);
  if (pool) pool[(int64_t)n * cs + c] += v;
}

// Valid kernel taps along one axis for output coordinate ``o`` of ``size``: [lo, hi).
static inline void tap_range(int o, int size, int K, int* lo, int* hi) {
  const int p = K / 2;
  *lo = p - o > 0 ? p - o : 0;
  *hi = size - o + p < K ? size - o + p : K;
}
