// CUDA kernels of the contrastive L1-ratio op (standalone: no torch headers).
//
// Launched per tap, in tap order on one stream. The flat element range [0, m) of a sample is
// cut into tiles of kThreads * kVecs 16-byte vectors (2048 fp32 / 4096 fp16 elements); each
// thread owns kVecs vectors of a tile. Grid (tile c, sample group): one block covers its tile
// for all samples of its group, so with shared negatives ([K, ...], neg_stride_b = 0) the K
// negative tiles are read from global memory once per block, parked in shared memory (each
// thread only reads back the slots it wrote), and reused for every sample. The group count
// is the smallest that gives ~kTargetBlocks blocks (a single group when the tap is large).
//   forward_partials:  per sample, |a - p| and every |a - n_k| summed over the tile: warp
//     shuffles, then a fixed-order sum over warps -> partial[(c * B + b) * (K + 1) + t].
//   forward_finalize:  one block per (target t, sample b) sums the partials over tiles in a
//     fixed order and writes num/den; the last block to finish (atomic counter) adds
//     weight * CL to the loss. Deterministic: no order depends on scheduling.
//   backward_elements: same grid; per-sample coefficients (contrastive_math.h) in shared
//     memory, then grad_anchor (and grad_positive) written with 16-byte stores.
// 16-byte vector loads/stores when every base pointer is 16-byte aligned and m and the
// negative strides are multiples of the vector width; else scalar (coalesced) accesses.
// Negatives that do not fit the shared-memory budget (K > 19 at fp32) are read per sample.
// Accumulation in fp32 (fp64 for double inputs); offsets in int64.
//
// L2 traffic, ESTIMATE from this access pattern (no GPU was used): VGG19 taps of 192x192
// patches, B = 16, K = 10 shared, fp32, forward + backward, grad_positive not requested.
// Unique bytes: the forward reads a, p, n; the backward reads them again and writes grad_a:
// 4 * sum_j m_j * (2 * (2B + K) + B) = 1799 MB. Requested from L2: anchors and positives
// once per sample, each negative tile once per block (parked in shared memory), grad_a once,
// plus the negatives re-read by the extra sample groups of the two small taps (relu4_1:
// 144 tiles -> 2 groups, relu5_1: 36 tiles -> 8 groups), the partials (written, read once)
// and the num/den reads of the backward blocks: 1869 MB, 1.04x the unique bytes (v1 read
// every shared negative once per sample: ~4.5x). At patch 96 the small taps split into more
// groups: 1.28x. `python bench/loss.py --l2-estimate` prints this model per tap.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string.h>

#include "../contrastive_math.h"
#include "contrastive_cuda.h"

namespace csd {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kVecs = 2;                   // 16-byte vectors per thread and tile
#ifndef CSD_CUDA_TARGET_BLOCKS  // overridden by the CPU emulation tests to split small grids too
#define CSD_CUDA_TARGET_BLOCKS 264  // two per SM of a 132-SM H100
#endif
constexpr int64_t kTargetBlocks = CSD_CUDA_TARGET_BLOCKS;
constexpr int kDefaultSmem = 48 * 1024;    // dynamic shared memory without opt-in
constexpr int kMaxSmem = 160 * 1024;       // opt-in limit used here (sm_80: 163 KB, sm_90: 227 KB)

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

// The elements one thread owns in a tile: kVecs 16-byte vectors.
template <typename scalar_t>
struct Pack {
  static constexpr int kPerVec = 16 / sizeof(scalar_t);
  static constexpr int kSize = kVecs * kPerVec;
  scalar_t v[kSize];
};
template <typename scalar_t>
constexpr int64_t kTile = int64_t(kThreads) * Pack<scalar_t>::kSize;

// The thread's elements of the tile starting at x, len valid elements (zeros past them).
// Aligned: vector u of thread t is vector u * kThreads + t of the tile; else element j of
// thread t is element j * kThreads + t. Either way a warp's accesses are contiguous.
template <typename scalar_t, bool Aligned>
__device__ __forceinline__ Pack<scalar_t> load(const scalar_t* __restrict__ x, int64_t len) {
  Pack<scalar_t> out{};
  constexpr int per_vec = Pack<scalar_t>::kPerVec;
#pragma unroll
  for (int u = 0; u < kVecs; ++u) {
    if (Aligned) {  // len is a multiple of the vector width here
      const int64_t vec = int64_t(u) * kThreads + threadIdx.x;
      if (vec * per_vec < len) {
        const uint4 raw = __ldg(reinterpret_cast<const uint4*>(x) + vec);
        memcpy(out.v + u * per_vec, &raw, sizeof(raw));
      }
    } else {
#pragma unroll
      for (int j = u * per_vec; j < (u + 1) * per_vec; ++j) {
        const int64_t e = int64_t(j) * kThreads + threadIdx.x;
        if (e < len) out.v[j] = x[e];
      }
    }
  }
  return out;
}

template <typename scalar_t, bool Aligned>
__device__ __forceinline__ void store(scalar_t* __restrict__ x, int64_t len, const Pack<scalar_t>& in) {
  constexpr int per_vec = Pack<scalar_t>::kPerVec;
#pragma unroll
  for (int u = 0; u < kVecs; ++u) {
    if (Aligned) {
      const int64_t vec = int64_t(u) * kThreads + threadIdx.x;
      if (vec * per_vec < len) {
        uint4 raw;
        memcpy(&raw, in.v + u * per_vec, sizeof(raw));
        reinterpret_cast<uint4*>(x)[vec] = raw;
      }
    } else {
#pragma unroll
      for (int j = u * per_vec; j < (u + 1) * per_vec; ++j) {
        const int64_t e = int64_t(j) * kThreads + threadIdx.x;
        if (e < len) x[e] = in.v[j];
      }
    }
  }
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {  // valid in lane 0; fixed order
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block, valid in thread 0; the order of additions is fixed. At most one call
// per block: nothing orders thread 0's reads before a second call's writes.
template <typename acc_t>
__device__ acc_t block_sum(acc_t v) {
  __shared__ acc_t warp_sums[kWarps];
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();  // every warp's sum is in warp_sums
  acc_t sum = 0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < kWarps; ++w) sum += warp_sums[w];
  }
  return sum;
}

// Dynamic shared memory: a head of `head` bytes, then (shared negatives) K parked packs per thread.
__host__ __device__ constexpr size_t align16(size_t bytes) { return (bytes + 15) / 16 * 16; }
template <typename scalar_t>
size_t parked_bytes(const Geometry& g, bool shared) {
  return shared ? size_t(g.K) * kThreads * sizeof(Pack<scalar_t>) : 0;
}

// Parks this thread's elements of the K negative tiles (shared negatives) in shared memory.
template <typename scalar_t, bool Aligned>
__device__ void park_negatives(const scalar_t* __restrict__ n, const Geometry& g, int64_t lo, int64_t len,
                               Pack<scalar_t>* parked) {
  for (int64_t k = 0; k < g.K; ++k) parked[k * kThreads + threadIdx.x] = load<scalar_t, Aligned>(n + k * g.neg_stride_k + lo, len);
}

template <typename scalar_t, bool Aligned, bool Shared>
__device__ __forceinline__ Pack<scalar_t> negative(const scalar_t* __restrict__ n, const Geometry& g, int64_t k,
                                                   int64_t b, int64_t lo, int64_t len, const Pack<scalar_t>* parked) {
  if (Shared) return parked[k * kThreads + threadIdx.x];
  return load<scalar_t, Aligned>(n + k * g.neg_stride_k + b * g.neg_stride_b + lo, len);
}

template <typename scalar_t, typename acc_t, bool Aligned, bool Shared>
__global__ void __launch_bounds__(kThreads)
    forward_partials(const scalar_t* __restrict__ a, const scalar_t* __restrict__ p,
                     const scalar_t* __restrict__ n, Geometry g, int64_t group_size, acc_t* __restrict__ partial) {
  extern __shared__ __align__(16) unsigned char smem[];
  acc_t* sums = reinterpret_cast<acc_t*>(smem);  // [2][K + 1][kWarps]: warp sums, two samples in flight
  auto* parked = reinterpret_cast<Pack<scalar_t>*>(smem + align16(2 * (g.K + 1) * kWarps * sizeof(acc_t)));
  const int64_t c = blockIdx.x, lo = c * kTile<scalar_t>, len = min(kTile<scalar_t>, g.m - lo);
  const int64_t b0 = blockIdx.y * group_size, b1 = min(g.B, b0 + group_size);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (Shared) park_negatives<scalar_t, Aligned>(n, g, lo, len, parked);
  for (int64_t b = b0; b < b1; ++b) {
    acc_t* out = sums + (b - b0) % 2 * (g.K + 1) * kWarps;
    const Pack<scalar_t> x = load<scalar_t, Aligned>(a + b * g.m + lo, len);
    for (int64_t t = 0; t <= g.K; ++t) {
      const Pack<scalar_t> y = t == 0 ? load<scalar_t, Aligned>(p + b * g.m + lo, len)
                                      : negative<scalar_t, Aligned, Shared>(n, g, t - 1, b, lo, len, parked);
      acc_t s = 0;
#pragma unroll
      for (int j = 0; j < Pack<scalar_t>::kSize; ++j) s += fabs(to_acc(x.v[j]) - to_acc(y.v[j]));
      s = warp_sum(s);
      if (lane == 0) out[t * kWarps + warp] = s;
    }
    __syncthreads();  // every warp's sums of sample b are in `out`
    // No second barrier: sample b + 1 writes the other half, and sample b + 2 writes this one
    // only after the barrier of b + 1, which every reader below passes first.
    for (int64_t t = threadIdx.x; t <= g.K; t += kThreads) {
      acc_t s = 0;
      for (int w = 0; w < kWarps; ++w) s += out[t * kWarps + w];
      partial[(c * g.B + b) * (g.K + 1) + t] = s;
    }
  }
}

template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    forward_finalize(const acc_t* __restrict__ partial, Geometry g, int64_t tiles, bool per_sample, acc_t eps,
                     acc_t weight, bool accumulate, unsigned* arrivals, acc_t* loss, acc_t* num, acc_t* den) {
  const int64_t idx = blockIdx.x, b = idx % g.B, t = idx / g.B;
  acc_t s = 0;
  for (int64_t c = threadIdx.x; c < tiles; c += kThreads) s += partial[(c * g.B + b) * (g.K + 1) + t];
  s = block_sum(s);
  if (threadIdx.x != 0) return;
  mean_of(num, den, g, idx) = s / acc_t(g.m);
  __threadfence();  // the mean is visible to every block before this block counts as arrived
  if (atomicAdd(arrivals, 1u) != gridDim.x - 1) return;
  // The last block: every num/den is written (and never read before, so not stale in L1).
  __threadfence();
  const acc_t tap = weight * ratio_loss(num, den, g.B, g.K, per_sample, eps);
  *loss = accumulate ? *loss + tap : tap;
  *arrivals = 0;
}

template <typename scalar_t, typename acc_t, bool Aligned, bool Shared>
__global__ void __launch_bounds__(kThreads)
    backward_elements(const acc_t* __restrict__ grad_loss, const scalar_t* __restrict__ a,
                      const scalar_t* __restrict__ p, const scalar_t* __restrict__ n, const acc_t* __restrict__ num,
                      const acc_t* __restrict__ den, Geometry g, bool per_sample, acc_t eps, acc_t weight,
                      int64_t group_size, scalar_t* __restrict__ ga, scalar_t* __restrict__ gp) {
  extern __shared__ __align__(16) unsigned char smem[];
  acc_t* coef = reinterpret_cast<acc_t*>(smem);  // [2][group_size]: alpha, beta of the group's samples
  auto* parked = reinterpret_cast<Pack<scalar_t>*>(smem + align16(2 * group_size * sizeof(acc_t)));
  const int64_t c = blockIdx.x, lo = c * kTile<scalar_t>, len = min(kTile<scalar_t>, g.m - lo);
  const int64_t b0 = blockIdx.y * group_size, b1 = min(g.B, b0 + group_size);
  for (int64_t i = threadIdx.x; i < b1 - b0; i += kThreads) {
    ratio_coefficients(num, den, g.B, g.K, g.m, per_sample, eps, weight * *grad_loss, b0 + i, &coef[i],
                       &coef[group_size + i]);
  }
  if (Shared) park_negatives<scalar_t, Aligned>(n, g, lo, len, parked);
  __syncthreads();  // every coefficient of the group is in shared memory
  for (int64_t b = b0; b < b1; ++b) {
    const Pack<scalar_t> x = load<scalar_t, Aligned>(a + b * g.m + lo, len);
    const Pack<scalar_t> y = load<scalar_t, Aligned>(p + b * g.m + lo, len);
    acc_t count[Pack<scalar_t>::kSize] = {};  // sum_k sign(a - n_k)
    for (int64_t k = 0; k < g.K; ++k) {
      const Pack<scalar_t> z = negative<scalar_t, Aligned, Shared>(n, g, k, b, lo, len, parked);
#pragma unroll
      for (int j = 0; j < Pack<scalar_t>::kSize; ++j) count[j] += sign_diff(to_acc(x.v[j]), to_acc(z.v[j]));
    }
    const acc_t alpha = coef[b - b0], beta = coef[group_size + b - b0];
    Pack<scalar_t> grad_a, grad_p;
#pragma unroll
    for (int j = 0; j < Pack<scalar_t>::kSize; ++j) {
      const acc_t sp = alpha * sign_diff(to_acc(x.v[j]), to_acc(y.v[j]));
      grad_a.v[j] = from_acc<scalar_t>(sp + beta * count[j]);
      grad_p.v[j] = from_acc<scalar_t>(-sp);
    }
    store<scalar_t, Aligned>(ga + b * g.m + lo, len, grad_a);
    if (gp != nullptr) store<scalar_t, Aligned>(gp + b * g.m + lo, len, grad_p);
  }
}

// Launch shape of one tap: tiles x sample groups, and whether the 16-byte path applies.
struct Plan {
  int64_t tiles, group_size, groups;
  bool aligned, shared;
};

// head: an upper bound of the shared memory the kernel needs before the parked negatives.
template <typename scalar_t>
Plan plan(const Geometry& g, size_t head, std::initializer_list<const void*> pointers) {
  Plan s;
  s.tiles = (g.m + kTile<scalar_t> - 1) / kTile<scalar_t>;
  const int64_t want_groups = (kTargetBlocks + s.tiles - 1) / s.tiles;
  s.group_size = (g.B + want_groups - 1) / want_groups;
  s.group_size = s.group_size < 1 ? 1 : s.group_size;
  s.groups = (g.B + s.group_size - 1) / s.group_size;
  constexpr int per_vec = Pack<scalar_t>::kPerVec;
  s.aligned = g.m % per_vec == 0 && g.neg_stride_k % per_vec == 0 && g.neg_stride_b % per_vec == 0;
  for (const void* ptr : pointers) s.aligned = s.aligned && reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
  s.shared = g.neg_stride_b == 0 && head + parked_bytes<scalar_t>(g, true) <= size_t(kMaxSmem);
  return s;
}

// Launches kernel<<<grid, kThreads, smem>>>, opting in to more than 48 KB of shared memory.
template <typename Kernel, typename... Args>
cudaError_t launch(Kernel* kernel, dim3 grid, size_t smem, cudaStream_t stream, Args... args) {
  if (smem > size_t(kMaxSmem)) return cudaErrorInvalidValue;
  if (smem > size_t(kDefaultSmem)) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err != cudaSuccess) return err;
  }
  kernel<<<grid, kThreads, smem, stream>>>(args...);
  return cudaGetLastError();
}

// kernel<scalar_t, acc_t, aligned, shared> for the plan's flags.
#define CSD_PICK(kernel, s)                                                                           \
  ((s).aligned ? ((s).shared ? kernel<scalar_t, acc_t, true, true> : kernel<scalar_t, acc_t, true, false>) \
               : ((s).shared ? kernel<scalar_t, acc_t, false, true> : kernel<scalar_t, acc_t, false, false>))

inline bool grid_fits(const Geometry& g, const Plan& s) {
  return s.tiles <= 0x7fffffff && s.groups <= 65535 && g.B * (g.K + 1) <= 0x7fffffff;
}

template <typename scalar_t>
size_t forward_workspace(const Geometry& g) {
  using acc_t = typename Acc<scalar_t>::type;
  const int64_t tiles = (g.m + kTile<scalar_t> - 1) / kTile<scalar_t>;
  return align16(size_t(tiles * g.B * (g.K + 1)) * sizeof(acc_t)) + 16;  // partials, then the arrival counter
}

template <typename scalar_t>
cudaError_t forward(const void* a, const void* p, const void* n, Geometry g, bool per_sample, double eps,
                    double weight, bool accumulate, void* workspace, void* loss, void* num, void* den,
                    cudaStream_t stream) {
  using acc_t = typename Acc<scalar_t>::type;
  const size_t head = align16(2 * (g.K + 1) * kWarps * sizeof(acc_t));
  const Plan s = plan<scalar_t>(g, head, {a, p, n});
  if (!grid_fits(g, s)) return cudaErrorInvalidConfiguration;
  auto* partial = static_cast<acc_t*>(workspace);
  auto* arrivals = reinterpret_cast<unsigned*>(static_cast<unsigned char*>(workspace) + forward_workspace<scalar_t>(g) - 16);
  cudaError_t err = cudaMemsetAsync(arrivals, 0, sizeof(unsigned), stream);
  if (err != cudaSuccess) return err;
  err = launch(CSD_PICK(forward_partials, s), dim3(unsigned(s.tiles), unsigned(s.groups)),
               head + parked_bytes<scalar_t>(g, s.shared), stream, static_cast<const scalar_t*>(a), static_cast<const scalar_t*>(p), static_cast<const scalar_t*>(n), g,
               s.group_size, partial);
  if (err != cudaSuccess) return err;
  return launch(forward_finalize<acc_t>, dim3(unsigned(g.B * (g.K + 1))), 0, stream,
                static_cast<const acc_t*>(partial), g, s.tiles, per_sample, acc_t(eps), acc_t(weight), accumulate,
                arrivals, static_cast<acc_t*>(loss), static_cast<acc_t*>(num), static_cast<acc_t*>(den));
}

template <typename scalar_t>
cudaError_t backward(const void* grad_loss, const void* a, const void* p, const void* n, const void* num,
                     const void* den, Geometry g, bool per_sample, double eps, double weight, void* ga, void* gp,
                     cudaStream_t stream) {
  using acc_t = typename Acc<scalar_t>::type;
  const Plan s = plan<scalar_t>(g, align16(2 * g.B * sizeof(acc_t)), {a, p, n, ga, gp == nullptr ? ga : gp});
  if (!grid_fits(g, s)) return cudaErrorInvalidConfiguration;
  const size_t smem = align16(2 * s.group_size * sizeof(acc_t)) + parked_bytes<scalar_t>(g, s.shared);
  return launch(CSD_PICK(backward_elements, s), dim3(unsigned(s.tiles), unsigned(s.groups)), smem, stream,
                static_cast<const acc_t*>(grad_loss), static_cast<const scalar_t*>(a),
                static_cast<const scalar_t*>(p), static_cast<const scalar_t*>(n), static_cast<const acc_t*>(num),
                static_cast<const acc_t*>(den), g, per_sample, acc_t(eps), acc_t(weight), s.group_size,
                static_cast<scalar_t*>(ga), static_cast<scalar_t*>(gp));
}

}  // namespace
}  // namespace csd

// Calls fn<scalar_t>(args...) for the csd_dtype; `otherwise` for an unknown dtype.
#define CSD_DISPATCH(dtype, otherwise, fn, ...)                        \
  switch (dtype) {                                                     \
    case CSD_FLOAT32: return csd::fn<float>(__VA_ARGS__);              \
    case CSD_FLOAT16: return csd::fn<__half>(__VA_ARGS__);             \
    case CSD_BFLOAT16: return csd::fn<__nv_bfloat16>(__VA_ARGS__);     \
    case CSD_FLOAT64: return csd::fn<double>(__VA_ARGS__);             \
  }                                                                    \
  return otherwise

extern "C" size_t csd_contrastive_forward_workspace(csd_dtype dtype, int64_t B, int64_t K, int64_t m) {
  const csd::Geometry g{B, K, m, m, 0};
  CSD_DISPATCH(dtype, 0, forward_workspace, g);
}

extern "C" cudaError_t csd_contrastive_forward(csd_dtype dtype, const void* anchor, const void* positive,
                                               const void* negatives, int64_t B, int64_t K, int64_t m,
                                               int64_t neg_stride_k, int64_t neg_stride_b, int per_sample,
                                               double eps, double weight, int accumulate, void* workspace,
                                               void* loss, void* num, void* den, cudaStream_t stream) {
  const csd::Geometry g{B, K, m, neg_stride_k, neg_stride_b};
  CSD_DISPATCH(dtype, cudaErrorInvalidValue, forward, anchor, positive, negatives, g, per_sample != 0, eps, weight, accumulate != 0,
               workspace, loss, num, den, stream);
}

extern "C" cudaError_t csd_contrastive_backward(csd_dtype dtype, const void* grad_loss, const void* anchor,
                                                const void* positive, const void* negatives, const void* num,
                                                const void* den, int64_t B, int64_t K, int64_t m,
                                                int64_t neg_stride_k, int64_t neg_stride_b, int per_sample,
                                                double eps, double weight, void* grad_anchor, void* grad_positive,
                                                cudaStream_t stream) {
  const csd::Geometry g{B, K, m, neg_stride_k, neg_stride_b};
  CSD_DISPATCH(dtype, cudaErrorInvalidValue, backward, grad_loss, anchor, positive, negatives, num, den, g, per_sample != 0, eps, weight,
               grad_anchor, grad_positive, stream);
}
