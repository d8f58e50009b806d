// Internal: conv2d's argument checks, shared by conv2d and the fused conv2d_batch_norm_relu
// (src/nn/functional/conv.cpp, conv_batch_norm.cpp) so that both refuse bad input alike.
// Guarantees: returns only for a 4-D input and weight of one float dtype and device whose
// channels, groups, bias and output size fit; else throws naming the shapes.
#pragma once

#include <array>
#include <cstdint>

#include "weft/tensor.h"

namespace weft::nn::detail {

void check_conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias,
                  std::array<int64_t, 2> stride, std::array<int64_t, 2> padding,
                  std::array<int64_t, 2> dilation, int64_t groups);

}  // namespace weft::nn::detail
