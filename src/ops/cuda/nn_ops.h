// Internal: the CUDA kernels behind weft::nn::functional (batch norm's four pieces, pooling,
// NLL loss) and cuDNN's convolutions, declared without CUDA headers. The functional code
// dispatches here when its input is on a CUDA device and keeps autograd to itself; each call
// queues its kernels on the tensors' device's current stream and returns without waiting.
#pragma once

#include <cstdint>
#include <utility>

#include "weft/tensor.h"

namespace weft::cuda::nn {

// Batch norm over contiguous float32 [N, C, S]; per-channel tensors are float32 [C] on the
// same device. Statistics and reductions accumulate in double, as on the CPU.
std::pair<Tensor, Tensor> batch_norm_stats(const Tensor& x);  // mean, biased var
Tensor batch_norm_elemt(const Tensor& x, const Tensor& mean, const Tensor& invstd,
                        const Tensor& weight, const Tensor& bias);
std::pair<Tensor, Tensor> batch_norm_backward_reduce(const Tensor& dy, const Tensor& x,
                                                     const Tensor& mean);
Tensor batch_norm_backward_elemt(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                 const Tensor& invstd, const Tensor& weight, const Tensor& sum_dy,
                                 const Tensor& sum_dy_xmu, int64_t count);
void update_running_stats(const Tensor& running_mean, const Tensor& running_var, const Tensor& mean,
                          const Tensor& var, int64_t count, double momentum);

// SyncBatchNorm: the same two with the element count as an int64 [1] tensor on the device (what
// batch_norm_gather_stats gives), read by the kernels so that the host never waits for it.
Tensor batch_norm_backward_elemt(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                 const Tensor& invstd, const Tensor& weight, const Tensor& sum_dy,
                                 const Tensor& sum_dy_xmu, const Tensor& count);
void update_running_stats(const Tensor& running_mean, const Tensor& running_var, const Tensor& mean,
                          const Tensor& var, const Tensor& count, double momentum);
// Combines the statistics all-gathered from R replicas, `rows` [R, 2 + 2C] contiguous float32,
// each row [count_hi, count_lo, mean[C], biased var[C]] with count = count_hi * 2^24 + count_lo:
// one thread per channel, Chan et al.'s pairwise formula in double, replicas with count 0
// skipped (PyTorch's batch_norm_gather_stats_with_counts). Gives the mean and biased variance
// of the union ([C] float32; 0 where every count is 0) and its count (int64 [1]).
struct GatheredStats {
  Tensor mean, var, count;
};
GatheredStats batch_norm_gather_stats(const Tensor& rows);

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

// cuDNN convolution of contiguous NCHW tensors of one dtype, float32, bf16 or fp16 (weight
// [K, C/G, kh, kw]). float32: TF32 only when weft::cuda::allow_tf32() (PyTorch's conv numerics
// otherwise); 16-bit: tensor cores with float32 accumulation.
struct ConvParams {
  int64_t sh, sw, ph, pw, dh, dw, groups;
};
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const ConvParams& p);
// Any of dx / dw / db may be skipped (want_* false): they come back undefined.
struct ConvGrads {
  Tensor dx, dw, db;
};
ConvGrads conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const ConvParams& p,
                          bool want_dx, bool want_dw, bool want_db);

}  // namespace weft::cuda::nn
