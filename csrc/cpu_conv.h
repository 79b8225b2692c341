// Direct 'same' convolution on NHWC activations for the CPU backend of FastStudent
// (csd_fast/native.py). Plain C++ only (no torch, no std templates): this header is included by
// the per-ISA translation units, which compile it under `#pragma GCC target(...)` inside their own
// namespace so no instantiation can leak between ISAs at link time.
#pragma once
#include <stdint.h>
#include <string.h>

namespace csd_cpu {

// out[n, y', x', c'] = epilogue(bias[co] + sum_{ky,kx,ci} x[n, y+ky-p, x+kx-p, ci] * w[co, ci, ky, kx])
// with zero padding p = K/2. Epilogue, in this order (the eager FastStudent's order):
//   shuffle: conv channel co = (i*r + j)*Cs + c (the packed order) lands at (r*y+i, r*x+j, c);
//   v = residual + res_scale * v; v = relu(v); v += mean_out[c]; pool[n, c] += v (stored value).
// Element strides are given for the four logical dims (n, c, y, x) of every tensor, so channel
// slices of wider buffers (CARN's concatenations) and NCHW outputs (the tail) are addressed in place.
struct ConvArgs {
  int N, H, W, Cin, Cout, K;     // Cout: real output channels (before the shuffle)
  const void* x;                 // float or bf16 (uint16_t)
  int64_t xn, xc, xy, xx;
  const void* w;                 // packed, see native.py: fp32 [CB][K*K][Cin][16], bf16 [CB][K*K][Cin2/2][16][2]
  const float* bias;             // fp32 [CB*16] (zero padded) or null
  void* out;                     // float or bf16, independently of x (see the RowsFn names below)
  int64_t on, oc, oy, ox;
  const void* res;               // same dtype and logical shape as out, or null
  int64_t rn, rc, ry, rx;
  float res_scale;
  int relu;
  int shuffle;                   // r >= 1; the output has Cout / r^2 channels
  const float* mean_out;         // [Cout / r^2] or null
};

// Rows [r0, r1) of the flattened (n, y) output rows; pool (or null) is a thread-private
// [N, Cout / r^2] fp32 accumulator. conv_rows_<x>: x, w, out and res of one dtype;
// conv_rows_<x>_out_<o>: out and res in dtype o (the bf16 model's fp32-input head writes bf16,
// its tail writes the caller's fp32 image), products as for x.
typedef void (*RowsFn)(const ConvArgs&, int64_t r0, int64_t r1, float* pool);

namespace scalar {
void conv_rows_f32(const ConvArgs&, int64_t, int64_t, float*);
void conv_rows_bf16(const ConvArgs&, int64_t, int64_t, float*);
void conv_rows_f32_out_bf16(const ConvArgs&, int64_t, int64_t, float*);
void conv_rows_bf16_out_f32(const ConvArgs&, int64_t, int64_t, float*);
}  // namespace scalar
namespace avx2 {
void conv_rows_f32(const ConvArgs&, int64_t, int64_t, float*);
}  // namespace avx2
namespace avx512 {
void conv_rows_f32(const ConvArgs&, int64_t, int64_t, float*);
void conv_rows_bf16(const ConvArgs&, int64_t, int64_t, float*);
void conv_rows_f32_out_bf16(const ConvArgs&, int64_t, int64_t, float*);
void conv_rows_bf16_out_f32(const ConvArgs&, int64_t, int64_t, float*);
}  // namespace avx512

}  // namespace csd_cpu
