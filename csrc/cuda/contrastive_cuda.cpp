// CUDA implementation of the csd_fast contrastive ops: checks, allocation, and a call into the
// C launch interface (contrastive_kernels.cu) on the current stream. Compiled only in CUDA builds.
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <utility>

#include "../contrastive.h"
#include "contrastive_cuda.h"

namespace csd {
namespace {

csd_dtype to_csd_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return CSD_FLOAT32;
    case at::kHalf: return CSD_FLOAT16;
    case at::kBFloat16: return CSD_BFLOAT16;
    case at::kDouble: return CSD_FLOAT64;
    default: TORCH_CHECK(false, "anchor: expected float16, bfloat16, float32 or float64, got ", t);
  }
}

std::tuple<at::Tensor, TapOutputs, TapOutputs> forward_cuda(at::TensorList anchors, at::TensorList positives,
                                                            at::TensorList negatives, c10::ArrayRef<double> weights,
                                                            c10::string_view reduction, double eps) {
  const std::vector<FlatTap> taps = flat_taps(anchors, positives, negatives, weights);
  const bool sample = per_sample(reduction);
  const c10::cuda::CUDAGuard guard(anchors[0].device());
  auto [loss, nums, dens] = empty_forward_outputs(anchors[0], taps);
  const csd_dtype dtype = to_csd_dtype(anchors[0].scalar_type());
  size_t workspace_bytes = 0;
  for (const FlatTap& tap : taps) {
    workspace_bytes = std::max(workspace_bytes, csd_contrastive_forward_workspace(dtype, tap.g.B, tap.g.K, tap.g.m));
  }
  // Reused by the taps, in stream order.
  at::Tensor workspace = at::empty({int64_t(workspace_bytes)}, loss.options().dtype(at::kByte));
  for (size_t j = 0; j < taps.size(); ++j) {
    const FlatTap& tap = taps[j];
    const Geometry& g = tap.g;
    C10_CUDA_CHECK(csd_contrastive_forward(dtype, tap.anchor.const_data_ptr(), tap.positive.const_data_ptr(),
                                           tap.negatives.const_data_ptr(), g.B, g.K, g.m, g.neg_stride_k,
                                           g.neg_stride_b, sample, eps, weights[j], j > 0,
                                           workspace.mutable_data_ptr(), loss.mutable_data_ptr(),
                                           nums[j].mutable_data_ptr(), dens[j].mutable_data_ptr(),
                                           at::cuda::getCurrentCUDAStream()));
  }
  return {loss, nums, dens};
}

std::tuple<TapOutputs, TapOutputs> backward_cuda(const at::Tensor& grad_loss, at::TensorList anchors,
                                                 at::TensorList positives, at::TensorList negatives,
                                                 at::TensorList nums, at::TensorList dens,
                                                 c10::ArrayRef<double> weights, c10::string_view reduction,
                                                 double eps, bool positive_grad) {
  const std::vector<FlatTap> taps = flat_taps(anchors, positives, negatives, weights);
  const bool sample = per_sample(reduction);
  const c10::cuda::CUDAGuard guard(anchors[0].device());
  const auto acc = anchors[0].options().dtype(at::toOpMathType(anchors[0].scalar_type()));
  const at::Tensor grad = grad_loss.to(acc).contiguous();
  TapOutputs grad_anchors, grad_positives;
  for (size_t j = 0; j < taps.size(); ++j) {
    const FlatTap& tap = taps[j];
    const Geometry& g = tap.g;
    const at::Tensor nm = nums[j].to(acc).contiguous(), dn = dens[j].to(acc).contiguous();
    auto ga = gradient_buffers(anchors[j], tap.anchor);
    auto gp = positive_grad ? gradient_buffers(positives[j], tap.positive) : std::pair<at::Tensor, at::Tensor>{};
    C10_CUDA_CHECK(csd_contrastive_backward(
        to_csd_dtype(tap.anchor.scalar_type()), grad.const_data_ptr(), tap.anchor.const_data_ptr(),
        tap.positive.const_data_ptr(), tap.negatives.const_data_ptr(), nm.const_data_ptr(), dn.const_data_ptr(), g.B,
        g.K, g.m, g.neg_stride_k, g.neg_stride_b, sample, eps, weights[j], ga.second.mutable_data_ptr(),
        positive_grad ? gp.second.mutable_data_ptr() : nullptr, at::cuda::getCurrentCUDAStream()));
    finish_gradient(ga);
    grad_anchors.push_back(ga.first);
    if (positive_grad) finish_gradient(gp);
    grad_positives.push_back(positive_grad ? gp.first : at::empty({0}, positives[j].options()));
  }
  return {grad_anchors, grad_positives};
}

}  // namespace
}  // namespace csd

TORCH_LIBRARY_IMPL(csd_fast, CUDA, m) {
  m.impl("contrastive_loss", &csd::forward_cuda);
  m.impl("contrastive_loss_backward", &csd::backward_cuda);
}
