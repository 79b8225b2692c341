// Torch-side helpers shared by the CPU kernel and the CUDA binding of the contrastive op.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <tuple>

#include "contrastive_math.h"

namespace csd {

// Checks shapes, dtypes and devices (TORCH_CHECK) and returns the flattened geometry.
Geometry check_inputs(const at::Tensor& anchor, const at::Tensor& positive, const at::Tensor& negatives);

// true for "sample", false for "batch"; anything else is an error.
bool per_sample(c10::string_view reduction);

// Outputs of the forward op: loss [], num [B], den [K, B] in the accumulation dtype.
std::tuple<at::Tensor, at::Tensor, at::Tensor> empty_forward_outputs(const at::Tensor& anchor, const Geometry& g);

}  // namespace csd
