// CUDA kernels of 2-D max and average pooling over contiguous float32 NCHW
// (ops/stubs/pooling.h), with their backward scatters. Plain kernels, grid-stride loops.
#include <cuda_runtime.h>

#include <cmath>

#include "cuda/cuda_check.h"
#include "ops/cuda/loops.cuh"
#include "ops/cuda/nn_common.cuh"
#include "ops/stubs/pooling.h"
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

// One thread per output cell; the window is visited row-major so the first maximum wins, and
// a NaN is always taken, so the last NaN wins (PyTorch's rule and the CPU kernel's).
__global__ void max_pool_kernel(int64_t total, const float* x, int64_t H, int64_t W, int64_t Ho,
                                int64_t Wo, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                                int64_t ph, int64_t pw, float* y, int64_t* idx) {
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < total;
       o += (int64_t)gridDim.x * blockDim.x) {
    const int64_t ow = o % Wo, oh = (o / Wo) % Ho, nc = o / (Ho * Wo);
    const float* plane = x + nc * H * W;
    const int64_t h0 = oh * sh - ph, w0 = ow * sw - pw;
    const int64_t hs = h0 > 0 ? h0 : 0, ws = w0 > 0 ? w0 : 0;
    const int64_t he = h0 + kh < H ? h0 + kh : H, we = w0 + kw < W ? w0 + kw : W;
    float best = -INFINITY;
    int64_t bi = hs * W + ws;
    for (int64_t i = hs; i < he; ++i)
      for (int64_t j = ws; j < we; ++j) {
        const float v = plane[i * W + j];
        if (v > best || v != v) {
          best = v;
          bi = i * W + j;
        }
      }
    y[o] = best;
    idx[o] = bi;
  }
}

__global__ void max_pool_backward_kernel(int64_t total, const float* dy, const int64_t* idx,
                                         int64_t plane_in, int64_t plane_out, float* dx) {
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < total;
       o += (int64_t)gridDim.x * blockDim.x)
    atomicAdd(dx + (o / plane_out) * plane_in + idx[o], dy[o]);
}

__global__ void avg_pool_kernel(int64_t total, const float* x, int64_t H, int64_t W, int64_t Ho,
                                int64_t Wo, const int64_t* win, float* y) {
  const int64_t *h0 = win, *h1 = win + Ho, *w0 = win + 2 * Ho, *w1 = win + 2 * Ho + Wo;
  const int64_t* div = win + 2 * Ho + 2 * Wo;
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < total;
       o += (int64_t)gridDim.x * blockDim.x) {
    const int64_t ow = o % Wo, oh = (o / Wo) % Ho, nc = o / (Ho * Wo);
    const float* plane = x + nc * H * W;
    double s = 0;
    for (int64_t i = h0[oh]; i < h1[oh]; ++i)
      for (int64_t j = w0[ow]; j < w1[ow]; ++j) s += plane[i * W + j];
    y[o] = (float)(s / (double)div[oh * Wo + ow]);
  }
}

__global__ void avg_pool_backward_kernel(int64_t total, const float* dy, int64_t H, int64_t W,
                                         int64_t Ho, int64_t Wo, const int64_t* win, float* dx) {
  const int64_t *h0 = win, *h1 = win + Ho, *w0 = win + 2 * Ho, *w1 = win + 2 * Ho + Wo;
  const int64_t* div = win + 2 * Ho + 2 * Wo;
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < total;
       o += (int64_t)gridDim.x * blockDim.x) {
    const int64_t ow = o % Wo, oh = (o / Wo) % Ho, nc = o / (Ho * Wo);
    float* plane = dx + nc * H * W;
    const float v = (float)((double)dy[o] / (double)div[oh * Wo + ow]);
    for (int64_t i = h0[oh]; i < h1[oh]; ++i)
      for (int64_t j = w0[ow]; j < w1[ow]; ++j) atomicAdd(plane + i * W + j, v);
  }
}

std::pair<Tensor, Tensor> max_pool2d(const Tensor& x, const ops::MaxPool2dParams& p) {
  check_on(x, x, "max_pool2d");
  const int64_t Ho = p.Ho, Wo = p.Wo;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor y = make_empty({N, C, Ho, Wo}, kFloat32, x.device());
  Tensor idx = make_empty({N, C, Ho, Wo}, kInt64, x.device());
  const int64_t total = y.numel();
  if (total == 0) return {y, idx};
  DeviceScope scope(x.device().index);
  max_pool_kernel<<<grid_for(total), kThreads, 0, stream_of(x.device().index)>>>(
      total, elem_ptr<float>(x), H, W, Ho, Wo, p.kh, p.kw, p.sh, p.sw, p.ph, p.pw,
      elem_ptr<float>(y), elem_ptr<int64_t>(idx));
  WEFT_CUDA_CHECK_LAUNCH();
  return {y, idx};
}

Tensor max_pool2d_backward(const Tensor& dy0, const Tensor& idx, const Shape& in_shape,
                           const ops::MaxPool2dParams&) {
  Tensor dy = dy0.contiguous();
  Tensor dx = zeros_on(in_shape, kFloat32, dy.device());
  const int64_t total = dy.numel();
  if (total == 0) return dx;
  DeviceScope scope(dy.device().index);
  max_pool_backward_kernel<<<grid_for(total), kThreads, 0, stream_of(dy.device().index)>>>(
      total, elem_ptr<float>(dy), elem_ptr<int64_t>(idx), in_shape[2] * in_shape[3],
      dy.size(2) * dy.size(3), elem_ptr<float>(dx));
  WEFT_CUDA_CHECK_LAUNCH();
  return dx;
}

// The windows travel to the device as one int64 tensor: h0, h1, w0, w1, divisors; made once, by
// the forward, and kept with the windows for the backward.
const Tensor& device_windows(const ops::AvgPoolWindows& win, Device d) {
  if (!win.device_copy.defined()) {
    std::vector<int64_t> packed;
    for (const auto* v : {&win.h0, &win.h1, &win.w0, &win.w1})
      packed.insert(packed.end(), v->begin(), v->end());
    for (double div : win.div) packed.push_back((int64_t)div);
    win.device_copy = tensor(packed, {(int64_t)packed.size()}).to(d);
  }
  return win.device_copy;
}

Tensor avg_pool2d(const Tensor& x, const ops::AvgPoolWindows& win, int64_t Ho, int64_t Wo) {
  const Tensor& windows = device_windows(win, x.device());
  check_on(x, x, "avg_pool2d");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor y = make_empty({N, C, Ho, Wo}, kFloat32, x.device());
  const int64_t total = y.numel();
  if (total == 0) return y;
  DeviceScope scope(x.device().index);
  avg_pool_kernel<<<grid_for(total), kThreads, 0, stream_of(x.device().index)>>>(
      total, elem_ptr<float>(x), H, W, Ho, Wo, elem_ptr<int64_t>(windows), elem_ptr<float>(y));
  WEFT_CUDA_CHECK_LAUNCH();
  return y;
}

Tensor avg_pool2d_backward(const Tensor& dy0, const ops::AvgPoolWindows& win,
                           const Shape& in_shape) {
  const Tensor& windows = device_windows(win, dy0.device());
  Tensor dy = dy0.contiguous();
  Tensor dx = zeros_on(in_shape, kFloat32, dy.device());
  const int64_t total = dy.numel();
  if (total == 0) return dx;
  DeviceScope scope(dy.device().index);
  avg_pool_backward_kernel<<<grid_for(total), kThreads, 0, stream_of(dy.device().index)>>>(
      total, elem_ptr<float>(dy), in_shape[2], in_shape[3], dy.size(2), dy.size(3),
      elem_ptr<int64_t>(windows), elem_ptr<float>(dx));
  WEFT_CUDA_CHECK_LAUNCH();
  return dx;
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::max_pool2d_stub, CUDA, &max_pool2d);
WEFT_REGISTER_DISPATCH(ops::max_pool2d_backward_stub, CUDA, &max_pool2d_backward);
WEFT_REGISTER_DISPATCH(ops::avg_pool2d_stub, CUDA, &avg_pool2d);
WEFT_REGISTER_DISPATCH(ops::avg_pool2d_backward_stub, CUDA, &avg_pool2d_backward);

}  // namespace weft::cuda
