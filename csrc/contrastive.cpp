// Schema of the contrastive L1-ratio op (defined once here) and the Python module csd_fast._C.
#include <Python.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
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

// The per-sample geometry from the shapes (checked), with contiguous negative strides.
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

// True when the three tensors can be read in place as flat arrays: all dense, the same strides
// over the per-sample dimensions (so the m elements of every sample and negative come in one
// order), samples m apart. Fills the negative strides of g.
bool readable_in_place(const at::Tensor& a, const at::Tensor& p, const at::Tensor& n, Geometry& g) {
  const int64_t lead = n.dim() - a.dim() + 1;  // 1 (shared) or 2 (per-sample) leading dims of n
  if (!a.is_non_overlapping_and_dense() || !n.is_non_overlapping_and_dense() || p.strides() != a.strides() ||
      (g.B > 1 && a.stride(0) != g.m) || n.strides().slice(lead) != a.strides().slice(1)) {
    return false;
  }
  g.neg_stride_k = g.K > 1 ? n.stride(0) : g.m;  // a size-1 dimension's stride is arbitrary
  g.neg_stride_b = lead == 1 ? 0 : g.B > 1 ? n.stride(1) : g.m;
  return true;
}

}  // namespace

std::vector<FlatTap> flat_taps(at::TensorList anchors, at::TensorList positives, at::TensorList negatives,
                               c10::ArrayRef<double> weights) {
  TORCH_CHECK(!anchors.empty() && positives.size() == anchors.size() && negatives.size() == anchors.size() &&
                  weights.size() == anchors.size(),
              "anchors, positives, negatives, weights: expected equal non-zero lengths, got ", anchors.size(), ", ",
              positives.size(), ", ", negatives.size(), ", ", weights.size());
  std::vector<FlatTap> taps;
  for (size_t j = 0; j < anchors.size(); ++j) {
    for (const at::Tensor& t : {anchors[j], positives[j], negatives[j]}) {
      TORCH_CHECK(t.scalar_type() == anchors[0].scalar_type() && t.device() == anchors[0].device(),
                  "tap ", j, ": expected the dtype and device of anchors[0] (", anchors[0].scalar_type(), ", ",
                  anchors[0].device(), "), got ", t.scalar_type(), ", ", t.device());
    }
    Geometry g = check_tap(anchors[j], positives[j], negatives[j]);
    if (readable_in_place(anchors[j], positives[j], negatives[j], g)) {
      taps.push_back({anchors[j], positives[j], negatives[j], g, false});
    } else {
      taps.push_back({anchors[j].contiguous(), positives[j].contiguous(), negatives[j].contiguous(),
                      check_tap(anchors[j], positives[j], negatives[j]), true});
    }
  }
  return taps;
}

std::pair<at::Tensor, at::Tensor> gradient_buffers(const at::Tensor& input, const at::Tensor& read) {
  at::Tensor result = at::empty_like(input);
  return {result, result.strides() == read.strides() ? result : at::empty_like(read)};
}

void finish_gradient(std::pair<at::Tensor, at::Tensor>& gradient) {
  if (!gradient.first.is_same(gradient.second)) gradient.first.copy_(gradient.second);
}

bool per_sample(c10::string_view reduction) {
  TORCH_CHECK(reduction == "batch" || reduction == "sample",
              "reduction: expected 'batch' or 'sample', got '", reduction, "'");
  return reduction == "sample";
}

std::tuple<at::Tensor, TapOutputs, TapOutputs> empty_forward_outputs(const at::Tensor& anchor,
                                                                     const std::vector<FlatTap>& taps) {
  const auto options = anchor.options().dtype(at::toOpMathType(anchor.scalar_type()));
  TapOutputs nums, dens;
  for (const FlatTap& tap : taps) {
    nums.push_back(at::empty({tap.g.B}, options));
    dens.push_back(at::empty({tap.g.K, tap.g.B}, options));
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
