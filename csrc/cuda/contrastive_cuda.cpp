// CUDA implementation of the csd_fast contrastive ops: checks, allocation, and a call into the
// C launch interface (contrastive_kernels.cu) on the current stream. Compiled only in CUDA builds.
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

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

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cuda(const at::Tensor& anchor, const at::Tensor& positive,
                                                            const at::Tensor& negatives, c10::string_view reduction,
                                                            double eps) {
  const Geometry g = check_inputs(anchor, positive, negatives);
  const bool sample = per_sample(reduction);
  const c10::cuda::CUDAGuard guard(anchor.device());
  auto [loss, num, den] = empty_forward_outputs(anchor, g);
  const at::Tensor a = anchor.contiguous(), p = positive.contiguous(), n = negatives.contiguous();
  at::Tensor workspace = at::empty({csd_contrastive_forward_workspace(g.B, g.K, g.m)}, loss.options());
  C10_CUDA_CHECK(csd_contrastive_forward(to_csd_dtype(a.scalar_type()), a.const_data_ptr(), p.const_data_ptr(),
                                         n.const_data_ptr(), g.B, g.K, g.m, g.neg_stride_k, g.neg_stride_b, sample,
                                         eps, workspace.mutable_data_ptr(), loss.mutable_data_ptr(),
                                         num.mutable_data_ptr(), den.mutable_data_ptr(),
                                         at::cuda::getCurrentCUDAStream()));
  return {loss, num, den};
}

std::tuple<at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad_loss, const at::Tensor& anchor,
                                                 const at::Tensor& positive, const at::Tensor& negatives,
                                                 const at::Tensor& num, const at::Tensor& den,
                                                 c10::string_view reduction, double eps, bool positive_grad) {
  const Geometry g = check_inputs(anchor, positive, negatives);
  const bool sample = per_sample(reduction);
  const c10::cuda::CUDAGuard guard(anchor.device());
  const at::Tensor a = anchor.contiguous(), p = positive.contiguous(), n = negatives.contiguous();
  const auto acc = a.options().dtype(at::toOpMathType(a.scalar_type()));
  const at::Tensor grad = grad_loss.to(acc).contiguous(), nm = num.to(acc).contiguous(), dn = den.to(acc).contiguous();
  at::Tensor ga = at::empty_like(a), gp = positive_grad ? at::empty_like(p) : at::empty({0}, p.options());
  at::Tensor workspace = at::empty({2 * g.B}, acc);
  C10_CUDA_CHECK(csd_contrastive_backward(to_csd_dtype(a.scalar_type()), grad.const_data_ptr(), a.const_data_ptr(),
                                          p.const_data_ptr(), n.const_data_ptr(), nm.const_data_ptr(),
                                          dn.const_data_ptr(), g.B, g.K, g.m, g.neg_stride_k, g.neg_stride_b, sample,
                                          eps, workspace.mutable_data_ptr(), ga.mutable_data_ptr(),
                                          positive_grad ? gp.mutable_data_ptr() : nullptr,
                                          at::cuda::getCurrentCUDAStream()));
  return {ga, gp};
}

}  // namespace
}  // namespace csd

TORCH_LIBRARY_IMPL(csd_fast, CUDA, m) {
  m.impl("contrastive_ratio", &csd::forward_cuda);
  m.impl("contrastive_ratio_backward", &csd::backward_cuda);
}
