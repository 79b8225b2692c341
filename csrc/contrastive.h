// Torch-side helpers shared by the CPU kernel and the CUDA binding of the contrastive op.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <tuple>
#include <vector>

#include "contrastive_math.h"

namespace csd {

using TapOutputs = std::vector<at::Tensor>;  // one tensor per VGG tap

// Checks every tap (shapes; dtype and device those of anchors[0]) and the list lengths with
// TORCH_CHECK, and returns each tap's flattened geometry.
std::vector<Geometry> check_taps(at::TensorList anchors, at::TensorList positives, at::TensorList negatives,
                                 c10::ArrayRef<double> weights);

// true for "sample", false for "batch"; anything else is an error.
bool per_sample(c10::string_view reduction);

// Forward outputs in the accumulation dtype: loss [], per tap num [B] and den [K, B].
std::tuple<at::Tensor, TapOutputs, TapOutputs> empty_forward_outputs(const at::Tensor& anchor,
                                                                     const std::vector<Geometry>& taps);

}  // namespace csd
