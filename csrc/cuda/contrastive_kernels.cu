// CUDA kernels of the contrastive L1-ratio op (standalone: no torch headers).
//
// Launched per tap, in tap order on one stream. Forward, two deterministic stages: (1) one
// block per (chunk c, sample b), block index w = c * B + b, reduces |a - p| and every
// |a - n_k| over its kChunk elements (anchor held in registers, each input read once; warp
// shuffles then a fixed-order sum over warps) into partial[w][t]; (2) one block sums the
// partials in chunk order and adds weight * CL to the loss.
// Backward: one block computes the per-sample coefficients, then one block per (chunk,
// sample) writes grad_anchor (and grad_positive) element-wise. Accumulation in fp32
// (fp64 for double inputs); offsets in int64.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../contrastive_math.h"
#include "contrastive_cuda.h"

namespace csd {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kPerThread = kChunk / kThreads;
static_assert(kChunk % kThreads == 0, "a chunk is a whole number of thread strides");

template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

__device__ inline float to_acc(float x) { return x; }
__device__ inline double to_acc(double x) { return x; }
__device__ inline float to_acc(__half x) { return __half2float(x); }
__device__ inline float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ inline T from_acc(typename Acc<T>::type x) {
  return x;
}
template <>
__device__ inline __half from_acc<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ inline __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Sum over the block, valid in thread 0; the order of additions is fixed.
template <typename acc_t>
__device__ acc_t block_sum(acc_t v, acc_t* warp_sums) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  acc_t sum = 0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < kWarps; ++w) sum += warp_sums[w];
  }
  __syncthreads();  // warp_sums is reused by the next call
  return sum;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    forward_partials(const scalar_t* __restrict__ a, const scalar_t* __restrict__ p,
                     const scalar_t* __restrict__ n, Geometry g, acc_t* __restrict__ partial) {
  __shared__ acc_t warp_sums[kWarps];
  const int64_t w = blockIdx.x, c = w / g.B, b = w % g.B, lo = c * kChunk;
  const int64_t len = g.m - lo < kChunk ? g.m - lo : kChunk;
  acc_t av[kPerThread];
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int64_t i = int64_t(j) * kThreads + threadIdx.x;
    av[j] = i < len ? to_acc(a[b * g.m + lo + i]) : acc_t(0);
  }
  for (int64_t t = 0; t <= g.K; ++t) {
    const scalar_t* y = t == 0 ? p + b * g.m + lo : n + (t - 1) * g.neg_stride_k + b * g.neg_stride_b + lo;
    acc_t s = 0;
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int64_t i = int64_t(j) * kThreads + threadIdx.x;
      if (i < len) s += fabs(av[j] - to_acc(y[i]));
    }
    s = block_sum(s, warp_sums);
    if (threadIdx.x == 0) partial[w * (g.K + 1) + t] = s;
  }
}

template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    forward_finalize(const acc_t* __restrict__ partial, Geometry g, bool per_sample, acc_t eps, acc_t weight,
                     bool accumulate, acc_t* loss, acc_t* num, acc_t* den) {
  for (int64_t idx = threadIdx.x; idx < g.B * (g.K + 1); idx += blockDim.x) write_mean(partial, g, idx, num, den);
  __syncthreads();  // num and den are complete (global writes of this block are visible)
  if (threadIdx.x == 0) {
    const acc_t tap = weight * ratio_loss(num, den, g.B, g.K, per_sample, eps);
    *loss = accumulate ? *loss + tap : tap;
  }
}

template <typename acc_t>
__global__ void backward_coefficients(const acc_t* __restrict__ grad_loss, const acc_t* __restrict__ num,
                                      const acc_t* __restrict__ den, Geometry g, bool per_sample, acc_t eps,
                                      acc_t weight, acc_t* __restrict__ coef) {
  for (int64_t b = threadIdx.x; b < g.B; b += blockDim.x) {
    ratio_coefficients(num, den, g.B, g.K, g.m, per_sample, eps, weight * *grad_loss, b, &coef[b], &coef[g.B + b]);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    backward_elements(const scalar_t* __restrict__ a, const scalar_t* __restrict__ p,
                      const scalar_t* __restrict__ n, Geometry g, const acc_t* __restrict__ coef,
                      scalar_t* __restrict__ ga, scalar_t* __restrict__ gp) {
  const int64_t w = blockIdx.x, c = w / g.B, b = w % g.B, lo = c * kChunk;
  const int64_t len = g.m - lo < kChunk ? g.m - lo : kChunk;
  const acc_t alpha = coef[b], beta = coef[g.B + b];
  const scalar_t* nb = n + b * g.neg_stride_b + lo;
  for (int j = 0; j < kPerThread; ++j) {
    const int64_t i = int64_t(j) * kThreads + threadIdx.x;
    if (i >= len) break;
    const int64_t off = b * g.m + lo + i;
    const acc_t x = to_acc(a[off]);
    acc_t count = 0;
    for (int64_t k = 0; k < g.K; ++k) count += sign_diff(x, to_acc(nb[k * g.neg_stride_k + i]));
    const acc_t sp = alpha * sign_diff(x, to_acc(p[off]));
    ga[off] = from_acc<scalar_t>(sp + beta * count);
    if (gp != nullptr) gp[off] = from_acc<scalar_t>(-sp);
  }
}

// One block per (chunk, sample); the grid's x dimension holds up to 2^31 - 1 blocks.
inline bool grid_fits(const Geometry& g) { return num_chunks(g.m) * g.B <= 0x7fffffff; }

template <typename scalar_t>
cudaError_t forward(const void* a, const void* p, const void* n, Geometry g, bool per_sample, double eps,
                    double weight, bool accumulate, void* workspace, void* loss, void* num, void* den,
                    cudaStream_t stream) {
  using acc_t = typename Acc<scalar_t>::type;
  if (!grid_fits(g)) return cudaErrorInvalidConfiguration;
  auto* partial = static_cast<acc_t*>(workspace);
  forward_partials<scalar_t, acc_t><<<unsigned(num_chunks(g.m) * g.B), kThreads, 0, stream>>>(
      static_cast<const scalar_t*>(a), static_cast<const scalar_t*>(p), static_cast<const scalar_t*>(n), g, partial);
  forward_finalize<acc_t><<<1, kThreads, 0, stream>>>(partial, g, per_sample, acc_t(eps), acc_t(weight), accumulate,
                                                      static_cast<acc_t*>(loss), static_cast<acc_t*>(num),
                                                      static_cast<acc_t*>(den));
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t backward(const void* grad_loss, const void* a, const void* p, const void* n, const void* num,
                     const void* den, Geometry g, bool per_sample, double eps, double weight, void* workspace,
                     void* ga, void* gp, cudaStream_t stream) {
  using acc_t = typename Acc<scalar_t>::type;
  if (!grid_fits(g)) return cudaErrorInvalidConfiguration;
  auto* coef = static_cast<acc_t*>(workspace);
  backward_coefficients<acc_t><<<1, kThreads, 0, stream>>>(static_cast<const acc_t*>(grad_loss),
                                                           static_cast<const acc_t*>(num),
                                                           static_cast<const acc_t*>(den), g, per_sample,
                                                           acc_t(eps), acc_t(weight), coef);
  backward_elements<scalar_t, acc_t><<<unsigned(num_chunks(g.m) * g.B), kThreads, 0, stream>>>(
      static_cast<const scalar_t*>(a), static_cast<const scalar_t*>(p), static_cast<const scalar_t*>(n), g, coef,
      static_cast<scalar_t*>(ga), static_cast<scalar_t*>(gp));
  return cudaGetLastError();
}

}  // namespace
}  // namespace csd

// Calls fn<scalar_t>(args...) for the csd_dtype.
#define CSD_DISPATCH(dtype, fn, ...)                                   \
  switch (dtype) {                                                     \
    case CSD_FLOAT32: return csd::fn<float>(__VA_ARGS__);              \
    case CSD_FLOAT16: return csd::fn<__half>(__VA_ARGS__);             \
    case CSD_BFLOAT16: return csd::fn<__nv_bfloat16>(__VA_ARGS__);     \
    case CSD_FLOAT64: return csd::fn<double>(__VA_ARGS__);             \
  }                                                                    \
  return cudaErrorInvalidValue

extern "C" int64_t csd_contrastive_forward_workspace(int64_t B, int64_t K, int64_t m) {
  return csd::num_chunks(m) * B * (K + 1);
}

extern "C" cudaError_t csd_contrastive_forward(csd_dtype dtype, const void* anchor, const void* positive,
                                               const void* negatives, int64_t B, int64_t K, int64_t m,
                                               int64_t neg_stride_k, int64_t neg_stride_b, int per_sample,
                                               double eps, double weight, int accumulate, void* workspace,
                                               void* loss, void* num, void* den, cudaStream_t stream) {
  const csd::Geometry g{B, K, m, neg_stride_k, neg_stride_b};
  CSD_DISPATCH(dtype, forward, anchor, positive, negatives, g, per_sample != 0, eps, weight, accumulate != 0,
               workspace, loss, num, den, stream);
}

extern "C" cudaError_t csd_contrastive_backward(csd_dtype dtype, const void* grad_loss, const void* anchor,
                                                const void* positive, const void* negatives, const void* num,
                                                const void* den, int64_t B, int64_t K, int64_t m,
                                                int64_t neg_stride_k, int64_t neg_stride_b, int per_sample,
                                                double eps, double weight, void* workspace, void* grad_anchor,
                                                void* grad_positive, cudaStream_t stream) {
  const csd::Geometry g{B, K, m, neg_stride_k, neg_stride_b};
  CSD_DISPATCH(dtype, backward, grad_loss, anchor, positive, negatives, num, den, g, per_sample != 0, eps, weight,
               workspace, grad_anchor, grad_positive, stream);
}
