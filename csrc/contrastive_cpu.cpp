// CPU kernels of the contrastive L1-ratio op: all taps in one call, one pass over each tap's
// inputs forward and one backward; the weighted tap losses are summed in tap order.
//
// Work item w = c * B + b is chunk c of sample b (contrastive_math.h); the items of all taps
// run in one parallel region per direction on ATen's OpenMP thread pool (at::parallel_for)
// and each writes its own slot, so results are bit-identical for any thread count. Consecutive items share chunk c, so shared negatives
// stay in cache across the batch while anchors and positives stream from memory once.
// Inputs are read in place in their memory order (contrastive.h, FlatTap); fp16/bf16 chunks
// are converted to fp32 first; accumulation in acc_t (fp32, fp64 for double).
//
// Vectorization: the two hot loops are written on 64-byte vectors with independent lanes, each
// lane adding its elements in a fixed order (no reassociation, no FMA contraction), compiled
// three times (AVX-512, AVX2, baseline x86-64 or other CPUs) and picked by CPU features (tests
// force each one through contrastive_cpu_isa): the extension stays portable and every
// instruction set gives the same bits.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "contrastive.h"

// The kernels below must give the same bits for every instruction set: no contraction of
// a * b + c into an FMA (which only some of the targets have).
#pragma GCC optimize("fp-contract=off")

namespace csd {
namespace {

// The hot loops use GCC/Clang vector extensions on W-byte vectors, W the register width of the
// instruction set they are compiled for (64 AVX-512, 32 AVX2, 16 SSE2). A block is 256 bytes
// (64 fp32 / 32 fp64 lanes) on every target, so each lane sees the same elements in the same
// order whatever W is.
#pragma GCC diagnostic ignored "-Wpsabi"  // wide vectors only live inside inlined loops
template <typename T, int W>
struct Vec;
template <int W>
struct Vec<float, W> {
  typedef float type __attribute__((vector_size(W)));
  typedef int32_t mask __attribute__((vector_size(W)));  // comparison results: -1 or 0
  static constexpr int32_t kAbs = 0x7fffffff;
};
template <int W>
struct Vec<double, W> {
  typedef double type __attribute__((vector_size(W)));
  typedef int64_t mask __attribute__((vector_size(W)));
  static constexpr int64_t kAbs = 0x7fffffffffffffff;
};
constexpr int kBlockBytes = 256;

#define CSD_INLINE inline __attribute__((always_inline))

// Software prefetch of the next work item's streamed inputs into L2 (its anchor and positive
// chunks, its per-sample negatives, and for shared negatives 1/B of the next chunk's), issued a
// few lines per block of the current item so that memory streams at an even rate while the item
// computes: the forward's K + 1 passes over a chunk read L1/L2 only, so prefetching in one pass
// left memory idle in the others; and each item starts at a new address (the next sample), where
// the hardware prefetcher would have to ramp up again.
class Prefetcher {
 public:
  void clear() { ranges_.clear(), lines_ = 0, range_ = 0, offset_ = 0, per_step_ = 0; }
  // Adds [ptr, ptr + bytes), widened to whole cache lines.
  void add(const void* ptr, int64_t bytes) {
    if (bytes <= 0) return;
    const auto begin = reinterpret_cast<uintptr_t>(ptr) & ~uintptr_t(kLine - 1);
    bytes += reinterpret_cast<uintptr_t>(ptr) - begin;
    ranges_.push_back({reinterpret_cast<const char*>(begin), bytes});
    lines_ += (bytes + kLine - 1) / kLine;
  }
  // Spreads the lines over `steps` calls of step(); finish() issues what is left.
  void spread_over(int64_t steps) { per_step_ = steps > 0 ? (lines_ + steps - 1) / steps : lines_; }
  CSD_INLINE void step() {
    for (int64_t q = 0; q < per_step_ && range_ < ranges_.size(); ++q) {
      __builtin_prefetch(ranges_[range_].first + offset_, 0, 2);
      offset_ += kLine;
      if (offset_ >= ranges_[range_].second) ++range_, offset_ = 0;
    }
  }
  void finish() {
    per_step_ = lines_;
    step();
  }

 private:
  static constexpr int64_t kLine = 64;
  std::vector<std::pair<const char*, int64_t>> ranges_;
  int64_t lines_ = 0, per_step_ = 0, offset_ = 0;
  size_t range_ = 0;
};

// out[t] = sum_i |x_i - ys[t]_i| over len elements, for t < targets: one accumulator per lane
// of a block, each adding its elements in order, then the tail, then the lanes in order.
template <typename acc_t, int W>
CSD_INLINE void abs_diff_sums(const acc_t* x, const acc_t* const* ys, int64_t targets, int64_t len, acc_t* out,
                              Prefetcher& prefetch) {
  using V = typename Vec<acc_t, W>::type;
  using M = typename Vec<acc_t, W>::mask;
  constexpr int L = W / sizeof(acc_t), U = kBlockBytes / W, kBlock = U * L;
  prefetch.spread_over(targets * (len / kBlock));
  for (int64_t t = 0; t < targets; ++t) {
    const acc_t* y = ys[t];
    V lane[U] = {};
    int64_t i = 0;
    for (; i + kBlock <= len; i += kBlock) {
      prefetch.step();
      for (int u = 0; u < U; ++u) {
        V a, b;
        memcpy(&a, x + i + u * L, sizeof(V));
        memcpy(&b, y + i + u * L, sizeof(V));
        lane[u] += (V)((M)(a - b) & Vec<acc_t, W>::kAbs);  // |a - b|: the sign bit cleared
      }
    }
    acc_t sum = 0;
    for (; i < len; ++i) sum += std::abs(x[i] - y[i]);
    for (int u = 0; u < U; ++u) {
      for (int j = 0; j < L; ++j) sum += lane[u][j];
    }
    out[t] = sum;
  }
  prefetch.finish();
}

// ga_i = alpha * sign(x_i - p_i) + beta * sum_k sign(x_i - negs[k]_i) and gp_i = -alpha *
// sign(x_i - p_i) (gp may be null); the count is summed exactly as integers.
template <typename acc_t, int W>
CSD_INLINE void sign_gradients(const acc_t* x, const acc_t* p, const acc_t* const* negs, int64_t K, int64_t len,
                               acc_t alpha, acc_t beta, acc_t* ga, acc_t* gp, Prefetcher& prefetch) {
  using V = typename Vec<acc_t, W>::type;
  using M = typename Vec<acc_t, W>::mask;
  constexpr int L = W / sizeof(acc_t), U = kBlockBytes / W, kBlock = U * L;
  prefetch.spread_over(len / kBlock);
  int64_t i = 0;
  for (; i + kBlock <= len; i += kBlock) {
    V xs[U];
    M count[U] = {};  // sum_k sign(x - n_k) = #(x > n_k) - #(x < n_k)
    prefetch.step();
    for (int u = 0; u < U; ++u) memcpy(&xs[u], x + i + u * L, sizeof(V));
    for (int64_t k = 0; k < K; ++k) {
      for (int u = 0; u < U; ++u) {
        V n;
        memcpy(&n, negs[k] + i + u * L, sizeof(V));
        count[u] = xs[u] > n ? count[u] + 1 : count[u];  // masked adds where the ISA has them
        count[u] = xs[u] < n ? count[u] - 1 : count[u];
      }
    }
    for (int u = 0; u < U; ++u) {
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
  prefetch.finish();
}

template <typename acc_t>
struct Kernels {
  void (*abs_diff_sums)(const acc_t*, const acc_t* const*, int64_t, int64_t, acc_t*, Prefetcher&);
  void (*sign_gradients)(const acc_t*, const acc_t*, const acc_t* const*, int64_t, int64_t, acc_t, acc_t, acc_t*,
                         acc_t*, Prefetcher&);
};

// One instantiation of both loops per instruction set, on vectors of its register width.
#define CSD_KERNELS_FOR(name, target, width)                                                                            \
  template <typename acc_t>                                                                                      \
  target void name##_abs_diff_sums(const acc_t* x, const acc_t* const* ys, int64_t targets, int64_t len,         \
                                   acc_t* out, Prefetcher& prefetch) {                                           \
    abs_diff_sums<acc_t, width>(x, ys, targets, len, out, prefetch);                                             \
  }                                                                                                              \
  template <typename acc_t>                                                                                      \
  target void name##_sign_gradients(const acc_t* x, const acc_t* p, const acc_t* const* negs, int64_t K,         \
                                    int64_t len, acc_t alpha, acc_t beta, acc_t* ga, acc_t* gp,                  \
                                    Prefetcher& prefetch) {                                                      \
    sign_gradients<acc_t, width>(x, p, negs, K, len, alpha, beta, ga, gp, prefetch);                             \
  }

#if defined(__x86_64__) && defined(__GNUC__)
CSD_KERNELS_FOR(avx512, __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq"))), 64)
CSD_KERNELS_FOR(avx2, __attribute__((target("avx2"))), 32)
#endif
CSD_KERNELS_FOR(baseline, , 16)

// Instruction sets, numbered as csd_cpu::best_isa numbers them (cpu_conv.cpp).
enum Isa : int64_t { kAuto = 0, kBaseline = 1, kAvx2 = 2, kAvx512 = 3 };

// The widest instruction set this CPU supports.
int64_t best_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
    return kAvx512;
  }
  if (__builtin_cpu_supports("avx2")) return kAvx2;
#endif
  return kBaseline;
}

std::atomic<int64_t> forced_isa{kAuto};  // set by contrastive_cpu_isa (tests)

// The kernels of the forced instruction set, else of the widest one this CPU supports.
template <typename acc_t>
Kernels<acc_t> kernels() {
  static const int64_t best = best_isa();
  const int64_t isa = forced_isa.load() == kAuto ? best : forced_isa.load();
#if defined(__x86_64__) && defined(__GNUC__)
  if (isa == kAvx512) return {avx512_abs_diff_sums<acc_t>, avx512_sign_gradients<acc_t>};
  if (isa == kAvx2) return {avx2_abs_diff_sums<acc_t>, avx2_sign_gradients<acc_t>};
#endif
  return {baseline_abs_diff_sums<acc_t>, baseline_sign_gradients<acc_t>};
}

// contrastive_cpu_isa(isa): makes the CPU kernels use instruction set `isa` (0: the widest this
// CPU supports, the default; 1 baseline, 2 AVX2, 3 AVX-512), so that tests can compare them
// (they must give the same bits); returns the one now in use.
int64_t set_isa(int64_t isa) {
  TORCH_CHECK_VALUE(isa >= kAuto && isa <= kAvx512,
                    "isa: expected 0 (auto), 1 (baseline), 2 (avx2) or 3 (avx512), got ", isa);
  TORCH_CHECK_VALUE(isa <= best_isa(), "isa: ", isa, " is not supported by this CPU (best: ", best_isa(), ")");
  forced_isa.store(isa);
  return isa == kAuto ? best_isa() : isa;
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

// Pointers of [lo, lo + len) of sample b: anchor, positive, then the K negatives, as acc_t
// (converted into `buffer` [K + 2, len] for fp16/bf16).
template <typename acc_t, typename scalar_t>
void chunk_inputs(const scalar_t* a, const scalar_t* p, const scalar_t* n, const Geometry& g, int64_t b, int64_t lo,
                  int64_t len, acc_t* buffer, const acc_t** ptrs) {
  ptrs[0] = as_acc(a + b * g.m + lo, len, buffer);
  ptrs[1] = as_acc(p + b * g.m + lo, len, buffer + len);
  for (int64_t k = 0; k < g.K; ++k) {
    ptrs[k + 2] = as_acc(n + k * g.neg_stride_k + b * g.neg_stride_b + lo, len, buffer + (k + 2) * len);
  }
}

// Runs item(j, w, lo, len, ptrs, prefetch) for every work item w = c * B + b (chunk c = [lo, lo +
// len) of sample b) of every tap j, in one parallel region (one fork-join per direction, not
// per tap): ptrs holds that chunk's inputs as acc_t, prefetch the lines of what the task reads
// next (Prefetcher). ~2^16 elements per task; small calls run inline.
template <typename scalar_t, typename Item>
void for_each_item(const std::vector<FlatTap>& taps, const Item& item) {
  using acc_t = at::opmath_type<scalar_t>;
  std::vector<int64_t> first{0};  // first item of each tap, then the total
  int64_t elements = 0, max_k = 0;
  for (const FlatTap& tap : taps) {
    first.push_back(first.back() + num_chunks(tap.g.m) * tap.g.B);
    elements += tap.g.B * tap.g.m * (tap.g.K + 1);
    max_k = std::max(max_k, tap.g.K);
  }
  const int64_t items = first.back();
  const int64_t grain = std::max<int64_t>(1, items * (int64_t(1) << 16) / std::max<int64_t>(1, elements));
  at::parallel_for(0, items, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buffer(std::is_same_v<acc_t, scalar_t> ? 0 : (max_k + 2) * kChunk);
    std::vector<const acc_t*> ptrs(max_k + 2);
    Prefetcher prefetch;
    // Tap, sample and chunk [lo, lo + len) of item `global` (of tap j or a later one).
    struct Where {
      size_t j;
      int64_t b, lo, len;
    };
    auto where = [&](int64_t global, size_t j) {
      while (global >= first[j + 1]) ++j;
      const Geometry& g = taps[j].g;
      const int64_t w = global - first[j], lo = w / g.B * kChunk;
      return Where{j, w % g.B, lo, std::min(kChunk, g.m - lo)};
    };
    // Prefetches elements [lo, lo + len) of negative k for the sample of `at`.
    auto negative = [&](const Where& at, int64_t k, int64_t lo, int64_t len) {
      const FlatTap& tap = taps[at.j];
      prefetch.add(tap.negatives.const_data_ptr<scalar_t>() + k * tap.g.neg_stride_k + at.b * tap.g.neg_stride_b + lo,
                   len * int64_t(sizeof(scalar_t)));
    };
    size_t j = std::upper_bound(first.begin(), first.end(), begin) - first.begin() - 1;
    for (int64_t global = begin; global < end; ++global) {
      const Where at = where(global, j);
      j = at.j;
      const FlatTap& tap = taps[j];
      const Geometry& g = tap.g;
      chunk_inputs(tap.anchor.const_data_ptr<scalar_t>(), tap.positive.const_data_ptr<scalar_t>(),
                   tap.negatives.const_data_ptr<scalar_t>(), g, at.b, at.lo, at.len, buffer.data(), ptrs.data());
      prefetch.clear();
      if (global + 1 < end) {  // the next item's anchor, positive and per-sample negatives
        const Where next = where(global + 1, j);
        const FlatTap& next_tap = taps[next.j];
        const int64_t off = next.b * next_tap.g.m + next.lo, bytes = next.len * int64_t(sizeof(scalar_t));
        prefetch.add(next_tap.anchor.const_data_ptr<scalar_t>() + off, bytes);
        prefetch.add(next_tap.positive.const_data_ptr<scalar_t>() + off, bytes);
        for (int64_t k = 0; next_tap.g.neg_stride_b != 0 && k < next_tap.g.K; ++k) {
          negative(next, k, next.lo, next.len);
        }
      }
      if (global - at.b + g.B < end) {  // slice b of the next chunk's shared negatives
        const Where chunk = where(global - at.b + g.B, j);
        const Geometry& cg = taps[chunk.j].g;
        const int64_t lo = chunk.lo + chunk.len * at.b / g.B, hi = chunk.lo + chunk.len * (at.b + 1) / g.B;
        for (int64_t k = 0; cg.neg_stride_b == 0 && k < cg.K; ++k) negative(chunk, k, lo, hi - lo);
      }
      item(j, global - first[j], at.lo, at.len, ptrs.data(), prefetch);
    }
  });
}

// A fresh gradient buffer costs one page fault per 4 KiB page on first write (measured: ~40%
// of the backward at patch 96). Ask for transparent huge pages on its 2 MiB-aligned part
// before writing, as c10's THP_MEM_ALLOC_ENABLE does for every allocation. Advisory only:
// where THP is off or the call fails, the buffer keeps small pages and the same contents.
void advise_huge_pages(const at::Tensor& t) {
#ifdef __linux__
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr()), end = begin + t.nbytes();
  const uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1), hi = end & ~(kHuge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#endif
}

std::tuple<at::Tensor, TapOutputs, TapOutputs> forward_cpu(at::TensorList anchors, at::TensorList positives,
                                                           at::TensorList negatives, c10::ArrayRef<double> weights,
                                                           c10::string_view reduction, double eps) {
  const std::vector<FlatTap> taps = flat_taps(anchors, positives, negatives, weights);
  const bool sample = per_sample(reduction);
  auto [loss, nums, dens] = empty_forward_outputs(anchors[0], taps);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, anchors[0].scalar_type(), "contrastive_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<std::vector<acc_t>> partials;  // per tap: [chunk c, sample b, target t]
    for (const FlatTap& tap : taps) partials.emplace_back(num_chunks(tap.g.m) * tap.g.B * (tap.g.K + 1));
    const Kernels<acc_t> simd = kernels<acc_t>();
    for_each_item<scalar_t>(taps, [&](size_t j, int64_t w, int64_t, int64_t len, const acc_t** ptrs,
                                      Prefetcher& prefetch) {
      const int64_t K1 = taps[j].g.K + 1;
      simd.abs_diff_sums(ptrs[0], ptrs + 1, K1, len, partials[j].data() + w * K1, prefetch);
    });
    acc_t total = 0;
    for (size_t j = 0; j < taps.size(); ++j) {
      const Geometry& g = taps[j].g;
      acc_t* num = nums[j].mutable_data_ptr<acc_t>();
      acc_t* den = dens[j].mutable_data_ptr<acc_t>();
      for (int64_t idx = 0; idx < g.B * (g.K + 1); ++idx) write_mean(partials[j].data(), g, idx, num, den);
      total += acc_t(weights[j]) * ratio_loss(num, den, g.B, g.K, sample, acc_t(eps));
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
  std::vector<std::pair<at::Tensor, at::Tensor>> grad_a, grad_p;  // (result, buffer written) per tap
  for (size_t j = 0; j < taps.size(); ++j) {
    grad_a.push_back(gradient_buffers(anchors[j], taps[j].anchor));
    advise_huge_pages(grad_a[j].second);
    if (!positive_grad) continue;
    grad_p.push_back(gradient_buffers(positives[j], taps[j].positive));
    advise_huge_pages(grad_p[j].second);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, anchors[0].scalar_type(), "contrastive_loss_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr bool convert = !std::is_same_v<acc_t, scalar_t>;
    const acc_t grad = grad_loss.item<acc_t>();
    std::vector<std::vector<acc_t>> alpha, beta;  // per tap and sample
    for (size_t j = 0; j < taps.size(); ++j) {
      const Geometry& g = taps[j].g;
      const at::Tensor nm = nums[j].to(at::CppTypeToScalarType<acc_t>::value).contiguous();
      const at::Tensor dn = dens[j].to(nm.scalar_type()).contiguous();
      alpha.emplace_back(g.B);
      beta.emplace_back(g.B);
      for (int64_t b = 0; b < g.B; ++b) {
        ratio_coefficients(nm.const_data_ptr<acc_t>(), dn.const_data_ptr<acc_t>(), g.B, g.K, g.m, sample,
                           acc_t(eps), acc_t(weights[j]) * grad, b, &alpha[j][b], &beta[j][b]);
      }
    }
    const Kernels<acc_t> simd = kernels<acc_t>();
    for_each_item<scalar_t>(taps, [&](size_t j, int64_t w, int64_t lo, int64_t len, const acc_t** ptrs,
                                      Prefetcher& prefetch) {
      const Geometry& g = taps[j].g;
      const int64_t b = w % g.B, off = b * g.m + lo;
      scalar_t* ga = grad_a[j].second.mutable_data_ptr<scalar_t>() + off;
      scalar_t* gp = positive_grad ? grad_p[j].second.mutable_data_ptr<scalar_t>() + off : nullptr;
      if constexpr (convert) {  // through fp32 buffers
        acc_t out[2][kChunk];
        simd.sign_gradients(ptrs[0], ptrs[1], ptrs + 2, g.K, len, alpha[j][b], beta[j][b], out[0],
                            gp == nullptr ? nullptr : out[1], prefetch);
        for (int64_t i = 0; i < len; ++i) ga[i] = scalar_t(out[0][i]);
        for (int64_t i = 0; gp != nullptr && i < len; ++i) gp[i] = scalar_t(out[1][i]);
      } else {  // scalar_t is acc_t here (the cast only spells it for the compiler)
        simd.sign_gradients(ptrs[0], ptrs[1], ptrs + 2, g.K, len, alpha[j][b], beta[j][b],
                            reinterpret_cast<acc_t*>(ga), reinterpret_cast<acc_t*>(gp), prefetch);
      }
    });
  });
  TapOutputs grad_anchors, grad_positives;
  for (size_t j = 0; j < taps.size(); ++j) {
    finish_gradient(grad_a[j]);
    grad_anchors.push_back(grad_a[j].first);
    if (positive_grad) finish_gradient(grad_p[j]);
    grad_positives.push_back(positive_grad ? grad_p[j].first : at::empty({0}, positives[j].options()));
  }
  return {grad_anchors, grad_positives};
}

}  // namespace
}  // namespace csd

TORCH_LIBRARY_FRAGMENT(csd_fast, m) { m.def("contrastive_cpu_isa(int isa) -> int", &csd::set_isa); }

TORCH_LIBRARY_IMPL(csd_fast, CPU, m) {
  m.impl("contrastive_loss", &csd::forward_cpu);
  m.impl("contrastive_loss_backward", &csd::backward_cpu);
}
