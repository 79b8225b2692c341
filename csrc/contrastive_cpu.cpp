// CPU kernels of the contrastive L1-ratio op: all taps in one call, one pass over each tap's
// inputs forward and one backward; the weighted tap losses are summed in tap order.
//
// Work item w = c * B + b is chunk c of sample b (contrastive_math.h); items run on ATen's
// OpenMP thread pool (at::parallel_for) and each writes its own slot, so results are
// bit-identical for any thread count. Consecutive items share chunk c, so shared negatives
// stay in cache across the batch. Inputs are read in their dtype, accumulated in acc_t.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "contrastive.h"

namespace csd {
namespace {

constexpr int kLanes = 16;  // independent accumulators, combined in a fixed order

// Work items per task so that each task touches >= 2^16 elements: small taps run inline
// instead of paying for a parallel region (grouping never changes the results).
int64_t grain(const Geometry& g) {
  return std::max<int64_t>(1, (int64_t(1) << 16) / (std::min(g.m, kChunk) * (g.K + 1)));
}

template <typename acc_t, typename scalar_t>
acc_t abs_diff_sum(const scalar_t* x, const scalar_t* y, int64_t len) {
  acc_t lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lane[j] += std::abs(acc_t(x[i + j]) - acc_t(y[i + j]));
  }
  acc_t sum = 0;
  for (; i < len; ++i) sum += std::abs(acc_t(x[i]) - acc_t(y[i]));
  for (int j = 0; j < kLanes; ++j) sum += lane[j];
  return sum;
}

// One tap: writes num and den, returns the tap's CL.
template <typename scalar_t>
at::opmath_type<scalar_t> forward_tap(const scalar_t* a, const scalar_t* p, const scalar_t* n, const Geometry& g,
                                      bool per_sample, double eps, at::opmath_type<scalar_t>* num,
                                      at::opmath_type<scalar_t>* den) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t chunks = num_chunks(g.m), K1 = g.K + 1;
  std::vector<acc_t> partial(chunks * g.B * K1);
  at::parallel_for(0, chunks * g.B, grain(g), [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      const int64_t c = w / g.B, b = w % g.B, lo = c * kChunk, len = std::min(kChunk, g.m - lo);
      const scalar_t* ab = a + b * g.m + lo;
      acc_t* out = partial.data() + w * K1;
      out[0] = abs_diff_sum<acc_t>(ab, p + b * g.m + lo, len);
      for (int64_t k = 0; k < g.K; ++k) {
        out[k + 1] = abs_diff_sum<acc_t>(ab, n + k * g.neg_stride_k + b * g.neg_stride_b + lo, len);
      }
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
  at::parallel_for(0, num_chunks(g.m) * g.B, grain(g), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> count(kChunk);  // sum_k sign(a - n_k) of the chunk
    for (int64_t w = begin; w < end; ++w) {
      const int64_t c = w / g.B, b = w % g.B, lo = c * kChunk, len = std::min(kChunk, g.m - lo);
      const int64_t off = b * g.m + lo;
      std::fill(count.begin(), count.begin() + len, acc_t(0));
      for (int64_t k = 0; k < g.K; ++k) {
        const scalar_t* nk = n + k * g.neg_stride_k + b * g.neg_stride_b + lo;
        for (int64_t i = 0; i < len; ++i) count[i] += sign_diff(acc_t(a[off + i]), acc_t(nk[i]));
      }
      const acc_t al = alpha[b], be = beta[b];
      for (int64_t i = 0; i < len; ++i) {
        ga[off + i] = scalar_t(al * sign_diff(acc_t(a[off + i]), acc_t(p[off + i])) + be * count[i]);
      }
      if (gp == nullptr) continue;
      for (int64_t i = 0; i < len; ++i) {
        gp[off + i] = scalar_t(-al * sign_diff(acc_t(a[off + i]), acc_t(p[off + i])));
      }
    }
  });
}

std::tuple<at::Tensor, TapOutputs, TapOutputs> forward_cpu(at::TensorList anchors, at::TensorList positives,
                                                           at::TensorList negatives, c10::ArrayRef<double> weights,
                                                           c10::string_view reduction, double eps) {
  const std::vector<Geometry> taps = check_taps(anchors, positives, negatives, weights);
  const bool sample = per_sample(reduction);
  auto [loss, nums, dens] = empty_forward_outputs(anchors[0], taps);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, anchors[0].scalar_type(), "contrastive_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    acc_t total = 0;
    for (size_t j = 0; j < taps.size(); ++j) {
      const at::Tensor a = anchors[j].contiguous(), p = positives[j].contiguous(), n = negatives[j].contiguous();
      total += acc_t(weights[j]) * forward_tap(a.const_data_ptr<scalar_t>(), p.const_data_ptr<scalar_t>(),
                                               n.const_data_ptr<scalar_t>(), taps[j], sample, eps,
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
  const std::vector<Geometry> taps = check_taps(anchors, positives, negatives, weights);
  const bool sample = per_sample(reduction);
  TapOutputs grad_anchors, grad_positives;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, anchors[0].scalar_type(), "contrastive_loss_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t grad = grad_loss.item<acc_t>();
    for (size_t j = 0; j < taps.size(); ++j) {
      const Geometry& g = taps[j];
      const at::Tensor a = anchors[j].contiguous(), p = positives[j].contiguous(), n = negatives[j].contiguous();
      const at::Tensor nm = nums[j].to(at::CppTypeToScalarType<acc_t>::value).contiguous();
      const at::Tensor dn = dens[j].to(nm.scalar_type()).contiguous();
      std::vector<acc_t> alpha(g.B), beta(g.B);
      for (int64_t b = 0; b < g.B; ++b) {
        ratio_coefficients(nm.const_data_ptr<acc_t>(), dn.const_data_ptr<acc_t>(), g.B, g.K, g.m, sample,
                           acc_t(eps), acc_t(weights[j]) * grad, b, &alpha[b], &beta[b]);
      }
      grad_anchors.push_back(at::empty_like(a));
      grad_positives.push_back(positive_grad ? at::empty_like(p) : at::empty({0}, p.options()));
      backward_tap(a.const_data_ptr<scalar_t>(), p.const_data_ptr<scalar_t>(), n.const_data_ptr<scalar_t>(), g,
                   alpha.data(), beta.data(), grad_anchors[j].mutable_data_ptr<scalar_t>(),
                   positive_grad ? grad_positives[j].mutable_data_ptr<scalar_t>() : nullptr);
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
