// CUDA kernels of nn::functional (nn_ops.h): batch norm's statistics, normalisation and
// backward pieces (one block per channel for the reductions, in double; elementwise kernels
// for the rest), max and average pooling, and NLL loss. Plain kernels, grid-stride loops.
#include <cuda_runtime.h>

#include <cmath>

#include "cuda/cuda_check.h"
#include "ops/cuda/loops.cuh"
#include "ops/cuda/nn_ops.h"
#include "weft/ops.h"

namespace weft::cuda::nn {

namespace {

using detail::DeviceScope;
using detail::elem_ptr;
using detail::grid_for;
using detail::kThreads;
using detail::stream_of;

constexpr int kReduceThreads = 512;

struct NCS {
  int64_t n, c, s;
};
NCS ncs_of(const Tensor& x) {
  int64_t s = 1;
  for (int64_t i = 2; i < x.dim(); ++i) s *= x.size(i);
  return {x.size(0), x.size(1), s};
}

void check_on(const Tensor& t, const Tensor& like, const char* what) {
  WEFT_CHECK(t.device() == like.device() && t.dtype() == kFloat32 && t.is_contiguous(), "CUDA ",
             what, ": expected a contiguous float32 tensor on ", like.device(), ", got ", t.str(),
             " on ", t.device());
}

const float* opt(const Tensor& t) { return t.defined() ? elem_ptr<float>(t) : nullptr; }

Tensor zeros_on(const Shape& shape, DType dtype, Device d) {
  Tensor t = make_empty(shape, dtype, d);
  // On d: a memset on the null stream would otherwise go to the current device's null stream,
  // unordered with the kernels that follow on d's (backward may run with another device current).
  DeviceScope scope(d.index);
  if (t.nbytes() > 0)
    WEFT_CUDA_CHECK(cudaMemsetAsync(t.impl()->storage->data, 0, t.nbytes(), stream_of(d.index)));
  return t;
}

// Sums a per-thread double pair over the block; thread 0 gets the totals.
__device__ void block_sum2(double& a, double& b) {
  __shared__ double sa[kReduceThreads], sb[kReduceThreads];
  sa[threadIdx.x] = a;
  sb[threadIdx.x] = b;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if ((int)threadIdx.x < half) {
      sa[threadIdx.x] += sa[threadIdx.x + half];
      sb[threadIdx.x] += sb[threadIdx.x + half];
    }
    __syncthreads();
  }
  a = sa[0];
  b = sb[0];
}

// Channel c = blockIdx.x: two passes over its N*S values (mean, then the centred second moment),
// so the variance has no one-pass cancellation.
__global__ void bn_stats_kernel(const float* x, int64_t N, int64_t C, int64_t S, float* mean,
                                float* var) {
  const int64_t c = blockIdx.x, M = N * S;
  double s = 0, unused = 0;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) s += x[((i / S) * C + c) * S + i % S];
  block_sum2(s, unused);
  const double mu = M > 0 ? s / (double)M : 0.0;
  double q = 0;
  unused = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const double d = (double)x[((i / S) * C + c) * S + i % S] - mu;
    q += d * d;
  }
  block_sum2(q, unused);
  if (threadIdx.x == 0) {
    mean[c] = (float)mu;
    var[c] = M > 0 ? (float)(q / (double)M) : 0.0f;
  }
}

__global__ void bn_elemt_kernel(int64_t n, int64_t C, int64_t S, const float* x, const float* mean,
                                const float* invstd, const float* w, const float* b, float* y) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = (i / S) % C;
    const float scale = invstd[c] * (w ? w[c] : 1.0f);
    const float shift = (b ? b[c] : 0.0f) - mean[c] * scale;
    y[i] = x[i] * scale + shift;
  }
}

__global__ void bn_backward_reduce_kernel(const float* dy, const float* x, const float* mean,
                                          int64_t N, int64_t C, int64_t S, float* sum_dy,
                                          float* sum_dy_xmu) {
  const int64_t c = blockIdx.x, M = N * S;
  const double mu = mean[c];
  double a = 0, b = 0;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const int64_t k = ((i / S) * C + c) * S + i % S;
    a += dy[k];
    b += (double)dy[k] * ((double)x[k] - mu);
  }
  block_sum2(a, b);
  if (threadIdx.x == 0) {
    sum_dy[c] = (float)a;
    sum_dy_xmu[c] = (float)b;
  }
}

// The element count per channel: SyncBatchNorm's global count where it is given on the device
// (dcount, int64 [1]: reading it here spares the host a wait), else the host's.
__device__ int64_t count_of(const int64_t* dcount, int64_t count) {
  return dcount ? *dcount : count;
}

__global__ void bn_backward_elemt_kernel(int64_t n, int64_t C, int64_t S, const float* dy,
                                         const float* x, const float* mean, const float* invstd,
                                         const float* w, const float* sum_dy,
                                         const float* sum_dy_xmu, const int64_t* dcount,
                                         int64_t hcount, float* dx) {
  const int64_t count = count_of(dcount, hcount);
  const double inv_count = count ? 1.0 / (double)count : 0.0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = (i / S) % C;
    const float is = invstd[c];
    const float mdy = (float)(sum_dy[c] * inv_count);
    const float k = (float)(sum_dy_xmu[c] * inv_count) * is * is;
    dx[i] = (w ? w[c] : 1.0f) * is * (dy[i] - mdy - (x[i] - mean[c]) * k);
  }
}

__global__ void running_stats_kernel(int64_t C, float* rm, float* rv, const float* mean,
                                     const float* var, float momentum, const int64_t* dcount,
                                     int64_t hcount) {
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int64_t count = count_of(dcount, hcount);
  const double unbias = count > 1 ? (double)count / (double)(count - 1) : 1.0;
  rm[c] = (1.0f - momentum) * rm[c] + momentum * mean[c];
  // The CPU's rounding: the unbiased variance in double, rounded to float, then scaled.
  rv[c] = (1.0f - momentum) * rv[c] + momentum * (float)(var[c] * unbias);
}

// Thread c combines channel c over the R gathered rows (nn_ops.h) exactly as the CPU's
// SyncBatchNorm does on the host: Chan et al. in double, in rank order, empty replicas skipped.
// Thread 0 also writes the total count (launched with at least one thread, even for C == 0).
__global__ void bn_gather_stats_kernel(const float* rows, int64_t R, int64_t C, float* mean,
                                       float* var, int64_t* count) {
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (c >= C && c > 0) return;
  const int64_t L = 2 + 2 * C;
  double n = 0, mu = 0, m2 = 0;
  for (int64_t r = 0; r < R; ++r) {
    const float* row = rows + r * L;
    const double ni = (double)(((int64_t)row[0] << 24) + (int64_t)row[1]);
    if (ni == 0) continue;
    const double total = n + ni;
    if (c < C) {
      const double mi = row[2 + c], vi = row[2 + C + c];
      const double delta = mi - mu;
      mu += delta * ni / total;
      m2 += vi * ni + delta * delta * n * ni / total;
    }
    n = total;
  }
  if (c < C) {
    mean[c] = (float)mu;
    var[c] = n > 0 ? (float)(m2 / n) : 0.0f;
  }
  if (c == 0) *count = (int64_t)n;
}

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

}  // namespace

std::pair<Tensor, Tensor> batch_norm_stats(const Tensor& x) {
  check_on(x, x, "batch_norm");
  const auto [N, C, S] = ncs_of(x);
  Tensor mean = make_empty({C}, kFloat32, x.device()), var = make_empty({C}, kFloat32, x.device());
  if (C == 0) return {mean, var};
  DeviceScope scope(x.device().index);
  bn_stats_kernel<<<(unsigned)C, kReduceThreads, 0, stream_of(x.device().index)>>>(
      elem_ptr<float>(x), N, C, S, elem_ptr<float>(mean), elem_ptr<float>(var));
  WEFT_CUDA_CHECK_LAUNCH();
  return {mean, var};
}

Tensor batch_norm_elemt(const Tensor& x, const Tensor& mean, const Tensor& invstd,
                        const Tensor& weight, const Tensor& bias) {
  check_on(x, x, "batch_norm");
  for (const Tensor* t : {&mean, &invstd, &weight, &bias})
    if (t->defined()) check_on(*t, x, "batch_norm");
  const NCS d = ncs_of(x);
  Tensor y = make_empty(x.sizes(), kFloat32, x.device());
  const int64_t n = x.numel();
  if (n == 0) return y;
  DeviceScope scope(x.device().index);
  bn_elemt_kernel<<<grid_for(n), kThreads, 0, stream_of(x.device().index)>>>(
      n, d.c, d.s, elem_ptr<float>(x), elem_ptr<float>(mean), elem_ptr<float>(invstd), opt(weight),
      opt(bias), elem_ptr<float>(y));
  WEFT_CUDA_CHECK_LAUNCH();
  return y;
}

std::pair<Tensor, Tensor> batch_norm_backward_reduce(const Tensor& dy, const Tensor& x,
                                                     const Tensor& mean) {
  check_on(x, x, "batch_norm backward");
  check_on(dy, x, "batch_norm backward");
  check_on(mean, x, "batch_norm backward");
  const auto [N, C, S] = ncs_of(x);
  // Both sums in one buffer, so that SyncBatchNorm all-reduces them in one collective.
  Tensor both = make_empty({2 * C}, kFloat32, x.device());
  Tensor sdy = both.narrow(0, 0, C), sdyx = both.narrow(0, C, C);
  if (C == 0) return {sdy, sdyx};
  DeviceScope scope(x.device().index);
  bn_backward_reduce_kernel<<<(unsigned)C, kReduceThreads, 0, stream_of(x.device().index)>>>(
      elem_ptr<float>(dy), elem_ptr<float>(x), elem_ptr<float>(mean), N, C, S, elem_ptr<float>(sdy),
      elem_ptr<float>(sdyx));
  WEFT_CUDA_CHECK_LAUNCH();
  return {sdy, sdyx};
}

namespace {

// The element count as the kernels take it: a device pointer to SyncBatchNorm's int64 [1]
// count (checked to live with `like`), or null when the host's count is used.
const int64_t* device_count(const Tensor& count, const Tensor& like) {
  if (!count.defined()) return nullptr;
  WEFT_CHECK(count.device() == like.device() && count.dtype() == kInt64 && count.numel() == 1,
             "CUDA batch_norm: the element count must be an int64 tensor of one element on ",
             like.device(), ", got ", count.str(), " on ", count.device());
  return elem_ptr<int64_t>(count);
}

Tensor backward_elemt(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& invstd,
                      const Tensor& weight, const Tensor& sum_dy, const Tensor& sum_dy_xmu,
                      const Tensor& dcount, int64_t hcount) {
  check_on(x, x, "batch_norm backward");
  check_on(dy, x, "batch_norm backward");
  for (const Tensor* t : {&mean, &invstd, &weight, &sum_dy, &sum_dy_xmu})
    if (t->defined()) check_on(*t, x, "batch_norm backward");
  const NCS d = ncs_of(x);
  Tensor dx = make_empty(x.sizes(), kFloat32, x.device());
  const int64_t n = x.numel();
  if (n == 0) return dx;
  DeviceScope scope(x.device().index);
  bn_backward_elemt_kernel<<<grid_for(n), kThreads, 0, stream_of(x.device().index)>>>(
      n, d.c, d.s, elem_ptr<float>(dy), elem_ptr<float>(x), elem_ptr<float>(mean),
      elem_ptr<float>(invstd), opt(weight), elem_ptr<float>(sum_dy), elem_ptr<float>(sum_dy_xmu),
      device_count(dcount, x), hcount, elem_ptr<float>(dx));
  WEFT_CUDA_CHECK_LAUNCH();
  return dx;
}

void running_stats(const Tensor& running_mean, const Tensor& running_var, const Tensor& mean,
                   const Tensor& var, const Tensor& dcount, int64_t hcount, double momentum) {
  check_on(mean, mean, "running stats");
  for (const Tensor* t : {&running_mean, &running_var, &var}) check_on(*t, mean, "running stats");
  const int64_t C = mean.numel();
  WEFT_CHECK(running_mean.numel() == C && running_var.numel() == C && var.numel() == C,
             "CUDA running stats: running_mean ", running_mean.str(), ", running_var ",
             running_var.str(), " and var ", var.str(), " must have the ", C, " channels of mean");
  if (C == 0) return;
  const int64_t* dc = device_count(dcount, mean);
  DeviceScope scope(mean.device().index);
  running_stats_kernel<<<(unsigned)((C + kThreads - 1) / kThreads), kThreads, 0,
                         stream_of(mean.device().index)>>>(
      C, elem_ptr<float>(running_mean), elem_ptr<float>(running_var), elem_ptr<float>(mean),
      elem_ptr<float>(var), (float)momentum, dc, hcount);
  WEFT_CUDA_CHECK_LAUNCH();
}

}  // namespace

Tensor batch_norm_backward_elemt(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                 const Tensor& invstd, const Tensor& weight, const Tensor& sum_dy,
                                 const Tensor& sum_dy_xmu, int64_t count) {
  return backward_elemt(dy, x, mean, invstd, weight, sum_dy, sum_dy_xmu, Tensor(), count);
}

Tensor batch_norm_backward_elemt(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                 const Tensor& invstd, const Tensor& weight, const Tensor& sum_dy,
                                 const Tensor& sum_dy_xmu, const Tensor& count) {
  WEFT_CHECK(count.defined(), "CUDA batch_norm backward: undefined element count");
  return backward_elemt(dy, x, mean, invstd, weight, sum_dy, sum_dy_xmu, count, 0);
}

void update_running_stats(const Tensor& running_mean, const Tensor& running_var, const Tensor& mean,
                          const Tensor& var, int64_t count, double momentum) {
  running_stats(running_mean, running_var, mean, var, Tensor(), count, momentum);
}

void update_running_stats(const Tensor& running_mean, const Tensor& running_var, const Tensor& mean,
                          const Tensor& var, const Tensor& count, double momentum) {
  WEFT_CHECK(count.defined(), "CUDA running stats: undefined element count");
  running_stats(running_mean, running_var, mean, var, count, 0, momentum);
}

GatheredStats batch_norm_gather_stats(const Tensor& rows) {
  WEFT_CHECK(rows.device().is_cuda() && rows.dtype() == kFloat32 && rows.is_contiguous() &&
                 rows.dim() == 2 && rows.size(1) >= 2 && rows.size(1) % 2 == 0,
             "CUDA batch_norm_gather_stats: expected contiguous float32 [R, 2 + 2C] rows on a "
             "CUDA device, got ",
             rows.str(), " on ", rows.device());
  const int64_t R = rows.size(0), C = (rows.size(1) - 2) / 2;
  const Device d = rows.device();
  GatheredStats out{make_empty({C}, kFloat32, d), make_empty({C}, kFloat32, d),
                    make_empty({1}, kInt64, d)};
  const int64_t threads = C > 0 ? C : 1;
  DeviceScope scope(d.index);
  bn_gather_stats_kernel<<<(unsigned)((threads + kThreads - 1) / kThreads), kThreads, 0,
                           stream_of(d.index)>>>(
      elem_ptr<float>(rows), R, C, elem_ptr<float>(out.mean), elem_ptr<float>(out.var),
      elem_ptr<int64_t>(out.count));
  WEFT_CUDA_CHECK_LAUNCH();
  return out;
}

std::pair<Tensor, Tensor> max_pool2d(const Tensor& x, int64_t Ho, int64_t Wo, int64_t kh,
                                     int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  check_on(x, x, "max_pool2d");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor y = make_empty({N, C, Ho, Wo}, kFloat32, x.device());
  Tensor idx = make_empty({N, C, Ho, Wo}, kInt64, x.device());
  const int64_t total = y.numel();
  if (total == 0) return {y, idx};
  DeviceScope scope(x.device().index);
  max_pool_kernel<<<grid_for(total), kThreads, 0, stream_of(x.device().index)>>>(
      total, elem_ptr<float>(x), H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, elem_ptr<float>(y),
      elem_ptr<int64_t>(idx));
  WEFT_CUDA_CHECK_LAUNCH();
  return {y, idx};
}

Tensor max_pool2d_backward(const Tensor& dy0, const Tensor& idx, const Shape& in_shape) {
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

Tensor avg_pool2d(const Tensor& x, const Tensor& windows, int64_t Ho, int64_t Wo) {
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

Tensor avg_pool2d_backward(const Tensor& dy0, const Tensor& windows, const Shape& in_shape) {
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

Tensor nll_loss_backward(const Tensor& g0, bool per_sample, double scale, const Tensor& target,
                         int64_t C, int64_t ignore_index) {
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

}  // namespace weft::cuda::nn
