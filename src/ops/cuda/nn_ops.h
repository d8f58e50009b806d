// Internal: the CUDA kernels behind weft::nn::functional's NLL loss, declared without CUDA
// headers. The functional code
// dispatches here when its input is on a CUDA device and keeps autograd to itself; each call
// queues its kernels on the tensors' device's current stream and returns without waiting.
#pragma once

#include <cstdint>
#include <utility>

#include "weft/tensor.h"

namespace weft::cuda::nn {

// -log_probs[i, target[i]] per sample (0 where target == ignore_index), float32 [N].
Tensor nll_loss_per_sample(const Tensor& log_probs, const Tensor& target, int64_t ignore_index);
// Gradient [N, C]: -g_i at (i, target[i]); g is [N] (per-sample) or a scalar times `scale`.
Tensor nll_loss_backward(const Tensor& g, bool per_sample, double scale, const Tensor& target,
                         int64_t C, int64_t ignore_index);

}  // namespace weft::cuda::nn
