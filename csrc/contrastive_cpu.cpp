// CPU kernels of the contrastive L1-ratio op: all taps in one call, one pass over each tap's
// inputs forward and one backward; the weighted tap losses are summed in tap order.
//
// Work item w = c * B + b is chunk c of sample b (contrastive_math.h); items run on ATen's
// OpenMP thread pool (at::parallel_for) and each writes its own slot, so results are
// bit-identical for any thread count. Consecutive items share chunk c, so shared negatives
// stay in cache across the batch while anchors and positives stream from memory once.
// Inputs are read in place in their memory order (contrastive.h, FlatTap); fp16/bf16 chunks
// are converted to fp32 first; accumulation in acc_t (fp32, fp64 for double).
//
// Vectorization: the two hot loops are written on 64-byte vectors with independent lanes, each
// lane adding its elements in a fixed order (no reassociation, no FMA contraction), compiled
// three times (AVX-512, AVX2, baseline x86-64 or other CPUs) and picked once by CPU features:
// the extension stays portable and every instruction set gives the same bits.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "contrastive.h"

// The kernels below must give the same bits for every instruction set: no contraction of
// a * b + c into an FMA (which only some of the targets have).
#pragma GCC optimize("fp-contract=off")

namespace csd {
namespace {

// The hot loops use GCC/Clang vector extensions: 64-byte vectors (16 fp32 or 8 fp64), which
// the compiler lowers to the target's registers (one zmm, two ymm or four xmm) with the same
// arithmetic. kUnroll vectors per block are independent accumulators.
#pragma GCC diagnostic ignored "-Wpsabi"  // 64-byte vectors only live inside inlined loops
template <typename T>
struct Vec64;
template <>
struct Vec64<float> {
  typedef float type __attribute__((vector_size(64)));
  typedef int32_t mask __attribute__((vector_size(64)));  // comparison results: -1 or 0
};
template <>
struct Vec64<double> {
  typedef double type __attribute__((vector_size(64)));
  typedef int64_t mask __attribute__((vector_size(64)));
};
constexpr int kUnroll = 4;

// Work items per task so that each task touches >= 2^16 elements: small taps run inline
// instead of paying for a parallel region (grouping never changes the results).
int64_t grain(const Geometry& g) {
  return std::max<int64_t>(1, (int64_t(1) << 16) / (std::min(g.m, kChunk) * (g.K + 1)));
}

#define CSD_INLINE inline __attribute__((always_inline))

// out[t] = sum_i |x_i - ys[t]_i| over len elements, for t < targets: kUnroll * 64 bytes of
// lanes, each adding its elements in order, then the tail, then the lanes in order.
template <typename acc_t>
CSD_INLINE void abs_diff_sums(const acc_t* x, const acc_t* const* ys, int64_t targets, int64_t len, acc_t* out) {
  using V = typename Vec64<acc_t>::type;
  constexpr int L = 64 / sizeof(acc_t), kBlock = kUnroll * L;
  const V zero = {};
  for (int64_t t = 0; t < targets; ++t) {
    const acc_t* y = ys[t];
    V lane[kUnroll] = {};
    int64_t i = 0;
    for (; i + kBlock <= len; i += kBlock) {
      for (int u = 0; u < kUnroll; ++u) {
        V a, b;
        memcpy(&a, x + i + u * L, sizeof(V));
        memcpy(&b, y + i + u * L, sizeof(V));
        const V d = a - b;
        lane[u] += d < zero ? -d : d;
      }
    }
    acc_t sum = 0;
    for (; i < len; ++i) sum += std::abs(x[i] - y[i]);
    for (int u = 0; u < kUnroll; ++u) {
      for (int j = 0; j < L; ++j) sum += lane[u][j];
    }
    out[t] = sum;
  }
}

// ga_i = alpha * sign(x_i - p_i) + beta * sum_k sign(x_i - negs[k]_i) and gp_i = -alpha *
// sign(x_i - p_i) (gp may be null); the count is summed exactly as integers.
template <typename acc_t>
CSD_INLINE void sign_gradients(const acc_t* x, const acc_t* p, const acc_t* const* negs, int64_t K, int64_t len,
                               acc_t alpha, acc_t beta, acc_t* ga, acc_t* gp) {
  using V = typename Vec64<acc_t>::type;
  using M = typename Vec64<acc_t>::mask;
  constexpr int L = 64 / sizeof(acc_t), kBlock = kUnroll * L;
  int64_t i = 0;
  for (; i + kBlock <= len; i += kBlock) {
    V xs[kUnroll];
    M count[kUnroll] = {};  // sum_k (x < n_k) - (x > n_k) with true = -1: sum_k sign(x - n_k)
    for (int u = 0; u < kUnroll; ++u) memcpy(&xs[u], x + i + u * L, sizeof(V));
    for (int64_t k = 0; k < K; ++k) {
      for (int u = 0; u < kUnroll; ++u) {
        V n;
        memcpy(&n, negs[k] + i + u * L, sizeof(V));
        count[u] += (xs[u] < n) - (xs[u] > n);
      }
    }
    for (int u = 0; u < kUnroll; ++u) {
      V pv;
      memcpy(&pv, p + i + u * L, sizeof(V));
      const V sp = alpha * __builtin_convertvector((xs[u] < pv) - (xs[u] > pv), V);
      const V g = sp + beta * __builtin_convertvector(count[u], V);
      memcpy(ga + i + u * L, &g, sizeof(V));
      if (gp == nullptr) continue;
      const V minus = -sp;
      memcpy(gp + i + u * L, &minus, sizeof(V));
    }
  }
  for (; i < len; ++i) {
    acc_t count = 0;
    for (int64_t k = 0; k < K; ++k) count += sign_diff(x[i], negs[k][i]);
    const acc_t sp = alpha * sign_diff(x[i], p[i]);
    ga[i] = sp + beta * count;
    if (gp != nullptr) gp[i] = -sp;
  }
}

template <typename acc_t>
struct Kernels {
  void (*abs_diff_sums)(const acc_t*, const acc_t* const*, int64_t, int64_t, acc_t*);
  void (*sign_gradients)(const acc_t*, const acc_t*, const acc_t* const*, int64_t, int64_t, acc_t, acc_t, acc_t*,
                         acc_t*);
};

// One instantiation of both loops per instruction set.
#define CSD_KERNELS_FOR(name, target)                                                                            \
  template <typename acc_t>                                                                                      \
  target void name##_abs_diff_sums(const acc_t* x, const acc_t* const* ys, int64_t targets, int64_t len,         \
                                   acc_t* out) {                                                                 \
    abs_diff_sums(x, ys, targets, len, out);                                                                     \
  }                                                                                                              \
  template <typename acc_t>                                                                                      \
  target void name##_sign_gradients(const acc_t* x, const acc_t* p, const acc_t* const* negs, int64_t K,         \
                                    int64_t len, acc_t alpha, acc_t beta, acc_t* ga, acc_t* gp) {                \
    sign_gradients(x, p, negs, K, len, alpha, beta, ga, gp);                                                     \
  }

#if defined(__x86_64__) && defined(__GNUC__)
CSD_KERNELS_FOR(avx512, __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq"))))
CSD_KERNELS_FOR(avx2, __attribute__((target("avx2"))))
#endif
CSD_KERNELS_FOR(baseline, )

// The widest instruction set this CPU supports, chosen once.
template <typename acc_t>
const Kernels<acc_t>& kernels() {
  static const Kernels<acc_t> chosen = [] {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
      return Kernels<acc_t>{avx512_abs_diff_sums<acc_t>, avx512_sign_gradients<acc_t>};
    }
    if (__builtin_cpu_supports("avx2")) return Kernels<acc_t>{avx2_abs_diff_sums<acc_t>, avx2_sign_gradients<acc_t>};
#endif
    return Kernels<acc_t>{baseline_abs_diff_sums<acc_t>, baseline_sign_gradients<acc_t>};
  }();
  return chosen;
}

// x as acc_t: the input itself when it already is, else converted into buffer.
template <typename acc_t, typename scalar_t>
const acc_t* as_acc(const scalar_t* x, int64_t len, acc_t* buffer) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    return x;
  } else {
    for (int64_t i = 0; i < len; ++i) buffer[i] = acc_t(x[i]);
    return buffer;
  }
}

// Pointers of chunk [lo, lo + len) of sample b: anchor, positive, then the K negatives, as acc_t
// (converted into `buffer` [K + 2, kChunk] for fp16/bf16).
template <typename acc_t, typename scalar_t>
void chunk_inputs(const scalar_t* a, const scalar_t* p, const scalar_t* n, const Geometry& g, int64_t b, int64_t lo,
                  int64_t len, acc_t* buffer, std::vector<const acc_t*>& ptrs) {
  ptrs[0] = as_acc(a + b * g.m + lo, len, buffer);
  ptrs[1] = as_acc(p + b * g.m + lo, len, buffer + kChunk);
  for (int64_t k = 0; k < g.K; ++k) {
    ptrs[k + 2] = as_acc(n + k * g.neg_stride_k + b * g.neg_stride_b + lo, len, buffer + (k + 2) * kChunk);
  }
}

template <typename acc_t, typename scalar_t>
std::vector<acc_t> conversion_buffer(const Geometry& g) {
  return std::vector<acc_t>(std::is_same_v<acc_t, scalar_t> ? 0 : (g.K + 2) * kChunk);
}

// One tap: writes num and den, returns the tap's CL.
template <typename scalar_t>
at::opmath_type<scalar_t> forward_tap(const scalar_t* a, const scalar_t* p, const scalar_t* n, const Geometry& g,
                                      bool per_sample, double eps, at::opmath_type<scalar_t>* num,
                                      at::opmath_type<scalar_t>* den) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t chunks = num_chunks(g.m), K1 = g.K + 1;
  std::vector<acc_t> partial(chunks * g.B * K1);
  const Kernels<acc_t>& simd = kernels<acc_t>();
  at::parallel_for(0, chunks * g.B, grain(g), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buffer = conversion_buffer<acc_t, scalar_t>(g);
    std::vector<const acc_t*> ptrs(g.K + 2);
    for (int64_t w = begin; w < end; ++w) {
      const int64_t c = w / g.B, b = w % g.B, lo = c * kChunk, len = std::min(kChunk, g.m - lo);
      chunk_inputs(a, p, n, g, b, lo, len, buffer.data(), ptrs);
      simd.abs_diff_sums(ptrs[0], ptrs.data() + 1, K1, len, partial.data() + w * K1);
    }
  });
  for (int64_t idx = 0; idx < g.B * K1; ++idx) write_mean(partial.data(), g, idx, num, den);
  return ratio_loss(num, den, g.B, g.K, per_sample, acc_t(eps));
}

template <typename scalar_t>
void backward_tap(const scalar_t* a, const scalar_t* p, const scalar_t* n, const Geometry& g,
                  const at::opmath_type<scalar_t>* alpha, const at::opmath_type<scalar_t>* beta, scalar_t* ga,
                  scalar_t* gp) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool convert = !std::is_same_v<acc_t, scalar_t>;
  const Kernels<acc_t>& simd = kernels<acc_t>();
  at::parallel_for(0, num_chunks(g.m) * g.B, grain(g), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buffer = conversion_buffer<acc_t, scalar_t>(g), out(convert ? 2 * kChunk : 0);
    std::vector<const acc_t*> ptrs(g.K + 2);
    for (int64_t w = begin; w < end; ++w) {
      const int64_t c = w / g.B, b = w % g.B, lo = c * kChunk, len = std::min(kChunk, g.m - lo), off = b * g.m + lo;
      chunk_inputs(a, p, n, g, b, lo, len, buffer.data(), ptrs);
      acc_t* ga_acc = out.data();  // the outputs themselves when no conversion is needed
      acc_t* gp_acc = gp == nullptr ? nullptr : out.data() + kChunk;
      if constexpr (!convert) ga_acc = ga + off, gp_acc = gp == nullptr ? nullptr : gp + off;
      simd.sign_gradients(ptrs[0], ptrs[1], ptrs.data() + 2, g.K, len, alpha[b], beta[b], ga_acc, gp_acc);
      if constexpr (convert) {
        for (int64_t i = 0; i < len; ++i) ga[off + i] = scalar_t(ga_acc[i]);
        for (int64_t i = 0; gp != nullptr && i < len; ++i) gp[off + i] = scalar_t(gp_acc[i]);
      }
    }
  });
}

std::tuple<at::Tensor, TapOutputs, TapOutputs> forward_cpu(at::TensorList anchors, at::TensorList positives,
                                                           at::TensorList negatives, c10::ArrayRef<double> weights,
                                                           c10::string_view reduction, double eps) {
  const std::vector<FlatTap> taps = flat_taps(anchors, positives, negatives, weights);
  const bool sample = per_sample(reduction);
  auto [loss, nums, dens] = empty_forward_outputs(anchors[0], taps);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, anchors[0].scalar_type(), "contrastive_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    acc_t total = 0;
    for (size_t j = 0; j < taps.size(); ++j) {
      const FlatTap& tap = taps[j];
      total += acc_t(weights[j]) * forward_tap(tap.anchor.const_data_ptr<scalar_t>(),
                                               tap.positive.const_data_ptr<scalar_t>(),
                                               tap.negatives.const_data_ptr<scalar_t>(), tap.g, sample, eps,
                                               nums[j].mutable_data_ptr<acc_t>(), dens[j].mutable_data_ptr<acc_t>());
    }
    *loss.mutable_data_ptr<acc_t>() = total;
  });
  return {loss, nums, dens};
}

std::tuple<TapOutputs, TapOutputs> backward_cpu(const at::Tensor& grad_loss, at::TensorList anchors,
                                                at::TensorList positives, at::TensorList negatives,
                                                at::TensorList nums, at::TensorList dens,
                                                c10::ArrayRef<double> weights, c10::string_view reduction,
                                                double eps, bool positive_grad) {
  const std::vector<FlatTap> taps = flat_taps(anchors, positives, negatives, weights);
  const bool sample = per_sample(reduction);
  TapOutputs grad_anchors, grad_positives;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, anchors[0].scalar_type(), "contrastive_loss_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t grad = grad_loss.item<acc_t>();
    for (size_t j = 0; j < taps.size(); ++j) {
      const FlatTap& tap = taps[j];
      const Geometry& g = tap.g;
      const at::Tensor nm = nums[j].to(at::CppTypeToScalarType<acc_t>::value).contiguous();
      const at::Tensor dn = dens[j].to(nm.scalar_type()).contiguous();
      std::vector<acc_t> alpha(g.B), beta(g.B);
      for (int64_t b = 0; b < g.B; ++b) {
        ratio_coefficients(nm.const_data_ptr<acc_t>(), dn.const_data_ptr<acc_t>(), g.B, g.K, g.m, sample,
                           acc_t(eps), acc_t(weights[j]) * grad, b, &alpha[b], &beta[b]);
      }
      auto ga = gradient_buffers(anchors[j], tap.anchor);
      auto gp = positive_grad ? gradient_buffers(positives[j], tap.positive)
                              : std::pair<at::Tensor, at::Tensor>{};
      backward_tap(tap.anchor.const_data_ptr<scalar_t>(), tap.positive.const_data_ptr<scalar_t>(),
                   tap.negatives.const_data_ptr<scalar_t>(), g, alpha.data(), beta.data(),
                   ga.second.mutable_data_ptr<scalar_t>(),
                   positive_grad ? gp.second.mutable_data_ptr<scalar_t>() : nullptr);
      finish_gradient(ga);
      grad_anchors.push_back(ga.first);
      if (positive_grad) finish_gradient(gp);
      grad_positives.push_back(positive_grad ? gp.first : at::empty({0}, positives[j].options()));
    }
  });
  return {grad_anchors, grad_positives};
}

}  // namespace
}  // namespace csd

TORCH_LIBRARY_IMPL(csd_fast, CPU, m) {
  m.impl("contrastive_loss", &csd::forward_cpu);
  m.impl("contrastive_loss_backward", &csd::backward_cpu);
}
