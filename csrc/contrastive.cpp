// Schema of the contrastive L1-ratio op (defined once here) and the Python module csd_fast._C.
#include <Python.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "contrastive.h"

extern "C" {
// Importing csd_fast._C runs the TORCH_LIBRARY registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace csd {

Geometry check_inputs(const at::Tensor& anchor, const at::Tensor& positive, const at::Tensor& negatives) {
  TORCH_CHECK(anchor.dim() >= 2 && anchor.numel() > 0, "anchor: expected a non-empty [B, C, ...] tensor, got ",
              anchor.sizes());
  TORCH_CHECK(positive.sizes() == anchor.sizes(), "positive: expected shape ", anchor.sizes(), ", got ",
              positive.sizes());
  const bool shared = negatives.dim() == anchor.dim();
  const auto per_negative = shared ? anchor.sizes().slice(1) : anchor.sizes();
  TORCH_CHECK(negatives.dim() == static_cast<int64_t>(per_negative.size()) + 1 && negatives.size(0) > 0 &&
                  negatives.sizes().slice(1) == per_negative,
              "negatives: expected [K >= 1, ", per_negative, "] (shared or per-sample), got ", negatives.sizes());
  for (const at::Tensor* t : {&positive, &negatives}) {
    TORCH_CHECK(t->scalar_type() == anchor.scalar_type() && t->device() == anchor.device(),
                "positive/negatives: expected anchor's dtype and device (", anchor.scalar_type(), ", ",
                anchor.device(), "), got ", t->scalar_type(), ", ", t->device());
  }
  const int64_t B = anchor.size(0), m = anchor.numel() / B;
  return {B, negatives.size(0), m, shared ? m : B * m, shared ? 0 : m};
}

bool per_sample(c10::string_view reduction) {
  TORCH_CHECK(reduction == "batch" || reduction == "sample",
              "reduction: expected 'batch' or 'sample', got '", reduction, "'");
  return reduction == "sample";
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> empty_forward_outputs(const at::Tensor& anchor, const Geometry& g) {
  const auto options = anchor.options().dtype(at::toOpMathType(anchor.scalar_type()));
  return {at::empty({}, options), at::empty({g.B}, options), at::empty({g.K, g.B}, options)};
}

}  // namespace csd

TORCH_LIBRARY(csd_fast, m) {
  // loss [], num [B] = mean |a - p| per sample, den [K, B] = mean |a - n_k| per sample.
  m.def("contrastive_ratio(Tensor anchor, Tensor positive, Tensor negatives, str reduction, float eps)"
        " -> (Tensor, Tensor, Tensor)");
  // grad_anchor, and grad_positive when positive_grad (else an empty [0] tensor).
  m.def("contrastive_ratio_backward(Tensor grad_loss, Tensor anchor, Tensor positive, Tensor negatives,"
        " Tensor num, Tensor den, str reduction, float eps, bool positive_grad) -> (Tensor, Tensor)");
}
