// Internal: the CUDA kernels behind weft::nn::functional (pooling, NLL loss), declared without
// CUDA headers. The functional code
// dispatches here when its input is on a CUDA device and keeps autograd to itself; each call
// queues its kernels on the tensors' device's current stream and returns without waiting.
#pragma once

#include <cstdint>
#include <utility>

#include "weft/tensor.h"

namespace weft::cuda::nn {

// Max pooling of contiguous [N, C, H, W]: values and each maximum's flat index in its plane.
std::pair<Tensor, Tensor> max_pool2d(const Tensor& x, int64_t Ho, int64_t Wo, int64_t kh,
                                     int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw);
Tensor max_pool2d_backward(const Tensor& dy, const Tensor& idx, const Shape& in_shape);
// Average pooling over explicit windows: `windows` is an int64 tensor on the device holding
// h0[Ho], h1[Ho], w0[Wo], w1[Wo] and the divisor of each output cell [Ho * Wo].
Tensor avg_pool2d(const Tensor& x, const Tensor& windows, int64_t Ho, int64_t Wo);
Tensor avg_pool2d_backward(const Tensor& dy, const Tensor& windows, const Shape& in_shape);

// -log_probs[i, target[i]] per sample (0 where target == ignore_index), float32 [N].
Tensor nll_loss_per_sample(const Tensor& log_probs, const Tensor& target, int64_t ignore_index);
// Gradient [N, C]: -g_i at (i, target[i]); g is [N] (per-sample) or a scalar times `scale`.
Tensor nll_loss_backward(const Tensor& g, bool per_sample, double scale, const Tensor& target,
                         int64_t C, int64_t ignore_index);

}  // namespace weft::cuda::nn
