// Torch-side helpers shared by the CPU kernel and the CUDA binding of the contrastive op.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <tuple>
#include <utility>
#include <vector>

#include "contrastive_math.h"

namespace csd {

using TapOutputs = std::vector<at::Tensor>;  // one tensor per VGG tap

// One tap as flat arrays (contrastive_math.h): the tensors the kernels read and their geometry.
// When anchor, positive and negatives share one memory format (contiguous, channels_last, or
// any dense layout with the sample dimension outermost) they are read in place, in memory
// order; otherwise all three are contiguous copies (`copied`).
struct FlatTap {
  at::Tensor anchor, positive, negatives;
  Geometry g;
  bool copied;
};

// Checks every tap (shapes; dtype and device those of anchors[0]) and the list lengths with
// TORCH_CHECK, and returns each tap's flat view.
std::vector<FlatTap> flat_taps(at::TensorList anchors, at::TensorList positives, at::TensorList negatives,
                               c10::ArrayRef<double> weights);

// The gradient of `input` as the op returns it (empty_like: input's memory format) and the
// buffer the kernel writes in `read`'s flat order: the same tensor unless the layouts differ,
// then finish_gradient copies the buffer into the result.
std::pair<at::Tensor, at::Tensor> gradient_buffers(const at::Tensor& input, const at::Tensor& read);
void finish_gradient(std::pair<at::Tensor, at::Tensor>& gradient);

// true for "sample", false for "batch"; anything else is an error.
bool per_sample(c10::string_view reduction);

// Forward outputs in the accumulation dtype: loss [], per tap num [B] and den [K, B].
std::tuple<at::Tensor, TapOutputs, TapOutputs> empty_forward_outputs(const at::Tensor& anchor,
                                                                     const std::vector<FlatTap>& taps);

}  // namespace csd
