// Internal: the channel-blocked side of functional::conv2d_batch_norm_relu, for Sequential's
// chains of Conv2d, BatchNorm2d, ReLU (Note [Conv-BatchNorm-ReLU fusion]): one block hands the
// next its output in oneDNN's blocked layout [N, C/B, H, W, B], and the gradient comes back in
// it, with no NCHW copy between. Such a tensor never leaves Sequential::forward.
#pragma once

#include <array>
#include <cstdint>

#include "weft/tensor.h"

namespace weft::nn::detail {

// The convolution's geometry and the batch norm's tensors and options.
struct ConvBatchNormArgs {
  std::array<int64_t, 2> stride, padding, dilation;
  int64_t groups;
  Tensor running_mean, running_var, weight, bias;
  double momentum, eps;
};

// functional::conv2d_batch_norm_relu where `input` may be channel-blocked (`input_blocked`: the
// output of a call here with `blocked_output`) and the output is blocked when `blocked_output`
// and the kernels fuse this; otherwise NCHW.
Tensor conv2d_batch_norm_relu(const Tensor& input, bool input_blocked, const Tensor& conv_weight,
                              const Tensor& conv_bias, const ConvBatchNormArgs& args,
                              bool blocked_output);

// A channel-blocked tensor as NCHW, differentiable (its gradient goes back blocked).
Tensor to_nchw(const Tensor& blocked);

}  // namespace weft::nn::detail
