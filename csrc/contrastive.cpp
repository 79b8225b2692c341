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
namespace {

Geometry check_tap(const at::Tensor& anchor, const at::Tensor& positive, const at::Tensor& negatives) {
  TORCH_CHECK(anchor.dim() >= 2 && anchor.numel() > 0, "anchor: expected a non-empty [B, C, ...] tensor, got ",
              anchor.sizes());
  TORCH_CHECK(positive.sizes() == anchor.sizes(), "positive: expected shape ", anchor.sizes(), ", got ",
              positive.sizes());
  const bool shared = negatives.dim() == anchor.dim();
  const auto per_negative = shared ? anchor.sizes().slice(1) : anchor.sizes();
  TORCH_CHECK(negatives.dim() == static_cast<int64_t>(per_negative.size()) + 1 && negatives.size(0) > 0 &&
                  negatives.sizes().slice(1) == per_negative,
              "negatives: expected [K >= 1, ", per_negative, "] (shared or per-sample), got ", negatives.sizes());
  const int64_t B = anchor.size(0), m = anchor.numel() / B;
  return {B, negatives.size(0), m, shared ? m : B * m, shared ? 0 : m};
}

}  // namespace

std::vector<Geometry> check_taps(at::TensorList anchors, at::TensorList positives, at::TensorList negatives,
                                 c10::ArrayRef<double> weights) {
  TORCH_CHECK(!anchors.empty() && positives.size() == anchors.size() && negatives.size() == anchors.size() &&
                  weights.size() == anchors.size(),
              "anchors, positives, negatives, weights: expected equal non-zero lengths, got ", anchors.size(), ", ",
              positives.size(), ", ", negatives.size(), ", ", weights.size());
  std::vector<Geometry> taps;
  for (size_t j = 0; j < anchors.size(); ++j) {
    for (const at::Tensor& t : {anchors[j], positives[j], negatives[j]}) {
      TORCH_CHECK(t.scalar_type() == anchors[0].scalar_type() && t.device() == anchors[0].device(),
                  "tap ", j, ": expected the dtype and device of anchors[0] (", anchors[0].scalar_type(), ", ",
                  anchors[0].device(), "), got ", t.scalar_type(), ", ", t.device());
    }
    taps.push_back(check_tap(anchors[j], positives[j], negatives[j]));
  }
  return taps;
}

bool per_sample(c10::string_view reduction) {
  TORCH_CHECK(reduction == "batch" || reduction == "sample",
              "reduction: expected 'batch' or 'sample', got '", reduction, "'");
  return reduction == "sample";
}

std::tuple<at::Tensor, TapOutputs, TapOutputs> empty_forward_outputs(const at::Tensor& anchor,
                                                                     const std::vector<Geometry>& taps) {
  const auto options = anchor.options().dtype(at::toOpMathType(anchor.scalar_type()));
  TapOutputs nums, dens;
  for (const Geometry& g : taps) {
    nums.push_back(at::empty({g.B}, options));
    dens.push_back(at::empty({g.K, g.B}, options));
  }
  return {at::empty({}, options), nums, dens};
}

}  // namespace csd

TORCH_LIBRARY(csd_fast, m) {
  // sum_j weights[j] * CL_j over the taps j, and per tap num [B] = mean |a - p| and
  // den [K, B] = mean |a - n_k| per sample (accumulation dtype).
  m.def("contrastive_loss(Tensor[] anchors, Tensor[] positives, Tensor[] negatives, float[] weights,"
        " str reduction, float eps) -> (Tensor, Tensor[], Tensor[])");
  // grad_anchors, and grad_positives when positive_grad (else empty [0] tensors). Negatives
  // are constants (detached, as in the official code): they never get a gradient.
  m.def("contrastive_loss_backward(Tensor grad_loss, Tensor[] anchors, Tensor[] positives, Tensor[] negatives,"
        " Tensor[] nums, Tensor[] dens, float[] weights, str reduction, float eps, bool positive_grad)"
        " -> (Tensor[], Tensor[])");
}
