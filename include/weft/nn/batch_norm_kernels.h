// The pieces of batch normalisation over [N, C, *] inputs, split as PyTorch's native
// batch_norm_stats / elemt / backward_reduce / backward_elemt so that SyncBatchNorm can put
// a collective between them. All take and return per-channel float32 tensors of shape [C].
#pragma once

#include <functional>

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

// SyncBatchNorm's combination of the replicas' statistics. Each replica all-gathers one float32
// row [count_hi, count_lo, mean[C], var[C]] (the count in two 24-bit halves, which float32
// carries exactly: count = count_hi * 2^24 + count_lo) on the statistics' device.
Tensor pack_channel_stats(const ChannelStats& local);
// The statistics of the union of the batches from the gathered rows [R, 2 + 2C]: Chan et al.'s
// pairwise formula in double, in rank order, replicas with count 0 skipped. On the CPU the count
// is a host integer. For CUDA rows everything stays on the device, as in PyTorch: one kernel
// gives mean and var, and the count stays an int64 [1] tensor (`device_count`, `count` is -1)
// that the overloads below read on the device, so no training step waits for the host.
struct GatheredStats {
  Tensor mean, var;  // [C], var biased
  int64_t count = -1;
  Tensor device_count;
};
GatheredStats combine_channel_stats(const Tensor& rows);
// update_running_stats and batch_norm_backward_elemt with the count of combine_channel_stats
// for CUDA tensors (an int64 [1] tensor on their device).
void update_running_stats(Tensor& running_mean, Tensor& running_var, const Tensor& mean,
                          const Tensor& var, const Tensor& device_count, double momentum);
Tensor batch_norm_backward_elemt(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                 const Tensor& invstd, const Tensor& weight, const Tensor& sum_dy,
                                 const Tensor& sum_dy_xmu, const Tensor& device_count);

// PyTorch's rule for 16-bit batch norm: statistics and normalisation in float, a bf16 input with
// float32 parameters giving a bf16 output. The CPU kernels above take a 16-bit x/dy with float32
// parameters as they are (their outputs in x's dtype). Otherwise (a 16-bit parameter or running
// statistic, or a 16-bit input on CUDA: batch_norm_needs_widening) `run` gets float32 widenings
// of them all (the same tensors where already float32), its output is rounded once to the
// input's dtype, and 16-bit running statistics receive the update.
using BatchNormFn =
    std::function<Tensor(const Tensor& input, Tensor running_mean, Tensor running_var,
                         const Tensor& weight, const Tensor& bias)>;
bool batch_norm_needs_widening(const Tensor& input, const Tensor& running_mean,
                               const Tensor& running_var, const Tensor& weight, const Tensor& bias);
Tensor batch_norm_widened(const Tensor& input, Tensor& running_mean, Tensor& running_var,
                          const Tensor& weight, const Tensor& bias, const BatchNormFn& run);

}  // namespace weft::nn::detail
