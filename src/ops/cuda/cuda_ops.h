// Internal: the CUDA backend's ops as the device-independent code calls them (declared without
// CUDA headers, defined in src/ops/cuda/*.cu and blas.cpp). Each takes tensors on one CUDA
// device, queues its kernels on that device's current stream and returns without waiting;
// autograd stays with the callers, which dispatch here when their inputs are on CUDA.
#pragma once

#include <utility>
#include <vector>

#include "weft/tensor.h"

namespace weft::cuda {

// --- loss scaling (amp.cu), for amp::GradScaler; every tensor on one CUDA device ---
// found_inf[0] = 1 if any element of the grads is inf/NaN, then each grad *= inv_scale[0].
void amp_non_finite_check_and_unscale_(const std::vector<Tensor>& grads, const Tensor& found_inf,
                                       const Tensor& inv_scale);
// scale (float [1]) and growth_tracker (int64 [1]) updated from found_inf as GradScaler.update.
void amp_update_scale_(const Tensor& scale, const Tensor& growth_tracker, const Tensor& found_inf,
                       double growth_factor, double backoff_factor, int64_t growth_interval);

// --- optimizers (optim.cu): multi-tensor fused steps, a few launches for all parameters ---
// Every list holds contiguous float32 tensors on one CUDA device, element i of each list of the
// same size; the update per element is the CPU kernel's (src/optim/sgd.cpp, adam.cpp), with the
// same fused multiply-adds.
struct SGDStep {
  float wd, mom, damp1, neg_lr;
  bool decay, momentum, first, nesterov;
};
void sgd_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
              const std::vector<Tensor>& momentum_buffers, const SGDStep& k);
struct AdamStep {
  float b1, b2, one_minus_b1, one_minus_b2, wd, eps, decay;
  bool l2, decoupled, amsgrad;
};
// neg_step_size[i] = -lr / bias_correction1 and bc2_sqrt[i] = sqrt(bias_correction2) of
// parameter i's own step count; max_exp_avg_sqs is empty without amsgrad.
void adam_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
               const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
               const std::vector<Tensor>& max_exp_avg_sqs, const std::vector<float>& neg_step_size,
               const std::vector<float>& bc2_sqrt, const AdamStep& k);

// --- nn ---
// ChannelShuffle of a contiguous (N, C, *) tensor or a channels-last 4-D one (layout kept).
Tensor channel_shuffle(const Tensor& x, int64_t groups);

}  // namespace weft::cuda
