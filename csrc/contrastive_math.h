// Torch-free math of the contrastive L1-ratio loss, shared by the CPU kernel and the CUDA .cu.
//
// One tap: a = anchor [B, m], p = positive [B, m], n_k = negative k of sample b.
//   num[b]      = mean_i |a - p|          den[k*B + b] = mean_i |a - n_k|
//   "batch":  L = mean_b num / (sum_k mean_b den_k + eps)
//   "sample": L = mean_b ( num[b] / (sum_k den[k*B + b] + eps) )
// Sums run over fixed chunks of kChunk elements; partial sums are stored as
// partial[(c * B + b) * (K + 1) + t] (t = 0: positive, t = k + 1: negative k) and combined in
// chunk order, so the result does not depend on the number of threads or blocks.
#pragma once
#include <stdint.h>

#ifdef __CUDACC__
#define CSD_HD __host__ __device__
#else
#define CSD_HD
#endif

namespace csd {

constexpr int64_t kChunk = 4096;

// Flattened layout: anchor/positive [B, m]; negative k of sample b starts at
// k * neg_stride_k + b * neg_stride_b (neg_stride_b = 0 for negatives shared by the batch).
struct Geometry {
  int64_t B, K, m, neg_stride_k, neg_stride_b;
};

// sign(x - y), the derivative of |x - y| in x as autograd defines it (0 at x == y),
// from two comparisons (no subtraction).
template <typename T>
CSD_HD inline T sign_diff(T x, T y) {
  return T(x > y) - T(x < y);
}

CSD_HD inline int64_t num_chunks(int64_t m) { return (m + kChunk - 1) / kChunk; }

// The mean of target t = idx / B of sample b = idx % B: num[b] (t = 0) or den[(t - 1) * B + b];
// idx runs over [0, B * (K + 1)).
template <typename T>
CSD_HD T& mean_of(T* num, T* den, const Geometry& g, int64_t idx) {
  const int64_t b = idx % g.B, t = idx / g.B;
  return t == 0 ? num[b] : den[(t - 1) * g.B + b];
}

// mean_of(idx) from its chunk sums, added in chunk order.
template <typename T>
CSD_HD void write_mean(const T* partial, const Geometry& g, int64_t idx, T* num, T* den) {
  const int64_t b = idx % g.B, t = idx / g.B;
  T s = 0;
  for (int64_t c = 0; c < num_chunks(g.m); ++c) s += partial[(c * g.B + b) * (g.K + 1) + t];
  mean_of(num, den, g, idx) = s / T(g.m);
}

template <typename T>
CSD_HD T ratio_loss(const T* num, const T* den, int64_t B, int64_t K, bool per_sample, T eps) {
  T total = 0, den_total = 0;
  for (int64_t b = 0; b < B; ++b) {
    T d = 0;
    for (int64_t k = 0; k < K; ++k) d += den[k * B + b];
    total += per_sample ? num[b] / (d + eps) : num[b];
    den_total += d;
  }
  return per_sample ? total / T(B) : (total / T(B)) / (den_total / T(B) + eps);
}

// Gradient of grad * L w.r.t. sum_i |a_bi - p_bi| (alpha) and sum_i |a_bi - n_kbi| (beta,
// the same for every k), so that dL/da = alpha * sign(a - p) + beta * sum_k sign(a - n_k).
template <typename T>
CSD_HD void ratio_coefficients(const T* num, const T* den, int64_t B, int64_t K, int64_t m,
                               bool per_sample, T eps, T grad, int64_t b, T* alpha, T* beta) {
  T n = 0, d = 0;
  for (int64_t s = per_sample ? b : 0; s < (per_sample ? b + 1 : B); ++s) {
    n += num[s];
    for (int64_t k = 0; k < K; ++k) d += den[k * B + s];
  }
  if (!per_sample) n /= T(B), d /= T(B);
  d += eps;
  const T scale = grad / (T(B) * T(m) * d);
  *alpha = scale;
  *beta = -scale * n / d;
}

}  // namespace csd
