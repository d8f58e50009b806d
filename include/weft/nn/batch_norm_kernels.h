// The pieces of batch normalisation over [N, C, *] inputs, split as PyTorch's native
// batch_norm_stats / elemt / backward_reduce / backward_elemt so that SyncBatchNorm can put
// a collective between them. All take and return per-channel float32 tensors of shape [C].
#pragma once

#include "weft/tensor.h"

namespace weft::nn::detail {

struct ChannelStats {
  Tensor mean;    // [C]
  Tensor var;     // [C], biased (divided by count)
  int64_t count;  // elements per channel = N * prod(spatial)
};
ChannelStats batch_norm_stats(const Tensor& x);
// y = (x - mean) * invstd * weight + bias; weight/bias may be undefined.
Tensor batch_norm_elemt(const Tensor& x, const Tensor& mean, const Tensor& invstd,
                        const Tensor& weight, const Tensor& bias);
// Per-channel sum(dy) and sum(dy * (x - mean)).
std::pair<Tensor, Tensor> batch_norm_backward_reduce(const Tensor& dy, const Tensor& x,
                                                     const Tensor& mean);
// dx for training mode given the (possibly all-reduced) sums and the total count.
Tensor batch_norm_backward_elemt(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                 const Tensor& invstd, const Tensor& weight, const Tensor& sum_dy,
                                 const Tensor& sum_dy_xmu, int64_t count);
// running = (1 - momentum) * running + momentum * batch (var made unbiased with count).
void update_running_stats(Tensor& running_mean, Tensor& running_var, const Tensor& mean,
                          const Tensor& var, int64_t count, double momentum);

}  // namespace weft::nn::detail
