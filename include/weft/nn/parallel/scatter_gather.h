// DataParallel's data movement, as torch.nn.parallel: scatter splits each input along
// `dim` into chunks (Tensor::chunk sizes, so a small batch uses fewer devices) and moves
// chunk i to device i; gather moves outputs to one device and concatenates them. Both are
// differentiable: gradients flow back to where the data came from.
#pragma once

#include <vector>

#include "weft/tensor.h"

namespace weft::nn::parallel {

// result[i] holds the chunks of every input for device i (all inputs split alike).
std::vector<std::vector<Tensor>> scatter(const std::vector<Tensor>& inputs,
                                         const std::vector<Device>& devices, int64_t dim = 0);
Tensor gather(const std::vector<Tensor>& outputs, Device target, int64_t dim = 0);

}  // namespace weft::nn::parallel
