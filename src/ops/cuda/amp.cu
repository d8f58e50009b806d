// GradScaler's two CUDA kernels (ops/stubs/amp.h; PyTorch's _amp_foreach_non_finite_check_and_
// unscale_ and _amp_update_scale_): they read the scale and write the overflow flag in device
// memory, so a training step with loss scaling queues work without waiting for the GPU.
#include <cmath>

#include "ops/cuda/loops.cuh"
#include "ops/stubs/amp.h"

namespace weft::cuda {

namespace {

__global__ void unscale_kernel(float* __restrict g, int64_t n, float* found_inf,
                               const float* inv_scale) {
  const float inv = *inv_scale;
  bool bad = false;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const float v = g[i];
    bad |= !isfinite(v);
    g[i] = inv == 1.0f ? v : __fmul_rn(v, inv);
  }
  if (bad) *found_inf = 1.0f;  // every writer stores the same value: no atomics needed
}

__global__ void update_scale_kernel(float* scale, int64_t* tracker, const float* found_inf,
                                    double growth_factor, double backoff_factor,
                                    int64_t growth_interval) {
  if (*found_inf != 0.0f) {
    *scale = (float)(*scale * backoff_factor);
    *tracker = 0;
    return;
  }
  const int64_t successful = *tracker + 1;
  if (successful == growth_interval) {
    const float grown = (float)(*scale * growth_factor);
    if (isfinite(grown)) *scale = grown;
    *tracker = 0;
  } else {
    *tracker = successful;
  }
}

void amp_non_finite_check_and_unscale_(const std::vector<Tensor>& grads, const Tensor& found_inf,
                                       const Tensor& inv_scale) {
  const Device dev = found_inf.device();
  WEFT_CHECK(dev.is_cuda() && found_inf.dtype() == kFloat32 && found_inf.numel() == 1 &&
                 inv_scale.device() == dev && inv_scale.dtype() == kFloat32 &&
                 inv_scale.numel() == 1,
             "amp unscale: found_inf and inv_scale must be float32 [1] on one CUDA device, got ",
             found_inf.str(), " on ", found_inf.device(), " and ", inv_scale.str(), " on ",
             inv_scale.device());
  detail::DeviceScope scope(dev.index);
  cudaStream_t stream = detail::stream_of(dev.index);
  for (const Tensor& g : grads) {
    WEFT_CHECK(g.device() == dev && g.dtype() == kFloat32 && g.is_contiguous(),
               "amp unscale: gradients must be contiguous float32 on ", dev, ", got ", g.str(),
               " on ", g.device());
    const int64_t n = g.numel();
    if (n == 0) continue;
    unscale_kernel<<<detail::grid_for(n), detail::kThreads, 0, stream>>>(
        detail::elem_ptr<float>(g), n, detail::elem_ptr<float>(found_inf),
        detail::elem_ptr<float>(inv_scale));
    WEFT_CUDA_CHECK_LAUNCH();
  }
}

void amp_update_scale_(const Tensor& scale, const Tensor& growth_tracker, const Tensor& found_inf,
                       double growth_factor, double backoff_factor, int64_t growth_interval) {
  const Device dev = scale.device();
  detail::DeviceScope scope(dev.index);
  update_scale_kernel<<<1, 1, 0, detail::stream_of(dev.index)>>>(
      detail::elem_ptr<float>(scale), detail::elem_ptr<int64_t>(growth_tracker),
      detail::elem_ptr<float>(found_inf), growth_factor, backoff_factor, growth_interval);
  WEFT_CUDA_CHECK_LAUNCH();
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::amp_unscale_stub, CUDA, &amp_non_finite_check_and_unscale_);
WEFT_REGISTER_DISPATCH(ops::amp_update_scale_stub, CUDA, &amp_update_scale_);

}  // namespace weft::cuda
