// CUDA kernels of the NLL loss (ops/stubs/loss.h): per-sample losses, reduced by weft's sum, and
// the gradient scatter. mse_loss has no fused kernel here: the op composes it.
#include <cuda_runtime.h>

#include <cmath>

#include "cuda/cuda_check.h"
#include "ops/cuda/loops.cuh"
#include "ops/cuda/nn_common.cuh"
#include "ops/stubs/loss.h"
#include "weft/autograd/graph.h"
#include "weft/ops.h"

namespace weft::cuda {

namespace {

using detail::check_on;
using detail::DeviceScope;
using detail::elem_ptr;
using detail::grid_for;
using detail::kThreads;
using detail::stream_of;
using detail::zeros_on;

__global__ void nll_kernel(int64_t N, int64_t C, const float* lp, const int64_t* t, int64_t ignore,
                           float* per) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < N) per[i] = t[i] == ignore ? 0.0f : -lp[i * C + t[i]];
}

__global__ void nll_backward_kernel(int64_t N, int64_t C, const float* g, bool per_sample,
                                    float scale, const int64_t* t, int64_t ignore, float* dx) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < N && t[i] != ignore) dx[i * C + t[i]] = -(per_sample ? g[i] : g[0]) * scale;
}

// -log_probs[i, target[i]] per sample (0 where target == ignore_index), float32 [N].
Tensor nll_loss_per_sample(const Tensor& log_probs, const Tensor& target, int64_t ignore_index) {
  check_on(log_probs, log_probs, "nll_loss");
  WEFT_CHECK(
      target.device() == log_probs.device() && target.dtype() == kInt64 && target.is_contiguous(),
      "CUDA nll_loss: target ", target.str(), " on ", target.device(),
      " must be contiguous int64 on ", log_probs.device());
  const int64_t N = log_probs.size(0), C = log_probs.size(1);
  Tensor per = make_empty({N}, kFloat32, log_probs.device());
  if (N == 0) return per;
  DeviceScope scope(log_probs.device().index);
  nll_kernel<<<grid_for(N), kThreads, 0, stream_of(log_probs.device().index)>>>(
      N, C, elem_ptr<float>(log_probs), elem_ptr<int64_t>(target), ignore_index,
      elem_ptr<float>(per));
  WEFT_CUDA_CHECK_LAUNCH();
  return per;
}

// Gradient [N, C]: -g_i at (i, target[i]); g is [N] (per-sample) or a scalar times `scale`.
Tensor nll_loss_backward_scaled(const Tensor& g0, bool per_sample, double scale,
                                const Tensor& target, int64_t C, int64_t ignore_index) {
  Tensor g = g0.contiguous();
  const int64_t N = target.numel();
  Tensor dx = zeros_on({N, C}, kFloat32, target.device());
  if (N == 0) return dx;
  DeviceScope scope(target.device().index);
  nll_backward_kernel<<<grid_for(N), kThreads, 0, stream_of(target.device().index)>>>(
      N, C, elem_ptr<float>(g), per_sample, (float)scale, elem_ptr<int64_t>(target), ignore_index,
      elem_ptr<float>(dx));
  WEFT_CUDA_CHECK_LAUNCH();
  return dx;
}

// What the reduction scales the per-sample losses by.
double scale_of(ops::LossReduction r, int64_t count) {
  return r == ops::LossReduction::Mean ? (count ? 1.0 / (double)count : NAN) : 1.0;
}

Tensor nll_loss(const Tensor& lp, const Tensor& t, int64_t ignore_index, ops::LossReduction r,
                int64_t count) {
  WEFT_CHECK(t.device() == lp.device(), "nll_loss: target on ", t.device(), " but input on ",
             lp.device());
  Tensor per = nll_loss_per_sample(lp.contiguous(), t, ignore_index);
  if (r == ops::LossReduction::None) return per;
  NoGradGuard ng;
  return per.sum() * scale_of(r, count);
}

Tensor nll_loss_backward(const Tensor& g, const Tensor& t, int64_t C, int64_t ignore_index,
                         ops::LossReduction r, int64_t count) {
  return nll_loss_backward_scaled(g, r == ops::LossReduction::None, scale_of(r, count), t, C,
                                  ignore_index);
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::nll_loss_stub, CUDA, &nll_loss);
WEFT_REGISTER_DISPATCH(ops::nll_loss_backward_stub, CUDA, &nll_loss_backward);

}  // namespace weft::cuda
