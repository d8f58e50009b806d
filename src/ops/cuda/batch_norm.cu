// CUDA kernels of batch normalisation (ops/stubs/batch_norm.h), float32: the statistics and the
// backward reductions with one block per channel, in double; elementwise kernels for the
// normalisation, its backward and the running statistics; SyncBatchNorm's combination of the
// replicas' statistics on the device. Plain kernels, grid-stride loops.
#include <cuda_runtime.h>

#include <cmath>

#include "cuda/cuda_check.h"
#include "ops/cuda/loops.cuh"
#include "ops/cuda/nn_common.cuh"
#include "ops/stubs/batch_norm.h"
#include "weft/ops.h"

namespace weft::cuda {

namespace {

using detail::check_on;
using detail::DeviceScope;
using detail::elem_ptr;
using detail::grid_for;
using detail::kThreads;
using detail::stream_of;

Tensor contiguous_or_undefined(const Tensor& t) { return t.defined() ? t.contiguous() : Tensor(); }

constexpr int kReduceThreads = 512;

struct NCS {
  int64_t n, c, s;
};
NCS ncs_of(const Tensor& x) {
  int64_t s = 1;
  for (int64_t i = 2; i < x.dim(); ++i) s *= x.size(i);
  return {x.size(0), x.size(1), s};
}

const float* opt(const Tensor& t) { return t.defined() ? elem_ptr<float>(t) : nullptr; }

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

// Thread c combines channel c over the R gathered rows (ops/stubs/batch_norm.h) exactly as the
// CPU's SyncBatchNorm does on the host: Chan et al. in double, in rank order, empty replicas
// skipped. Thread 0 also writes the total count (launched with at least one thread, even for C ==
// 0).
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

std::pair<Tensor, Tensor> stats(const Tensor& x0) {
  const Tensor x = x0.contiguous();
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

Tensor elemt(const Tensor& x0, const Tensor& mean0, const Tensor& invstd0, const Tensor& weight0,
             const Tensor& bias0) {
  const Tensor x = x0.contiguous(), mean = mean0.contiguous(), invstd = invstd0.contiguous();
  const Tensor weight = contiguous_or_undefined(weight0), bias = contiguous_or_undefined(bias0);
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

std::pair<Tensor, Tensor> backward_reduce(const Tensor& dy0, const Tensor& x0,
                                          const Tensor& mean0) {
  const Tensor dy = dy0.contiguous(), x = x0.contiguous(), mean = mean0.contiguous();
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

// The element count as the kernels take it: a device pointer to SyncBatchNorm's int64 [1]
// count (checked to live with `like`), or null when the host's count is used.
const int64_t* device_count(const Tensor& count, const Tensor& like) {
  if (!count.defined()) return nullptr;
  WEFT_CHECK(count.device() == like.device() && count.dtype() == kInt64 && count.numel() == 1,
             "CUDA batch_norm: the element count must be an int64 tensor of one element on ",
             like.device(), ", got ", count.str(), " on ", count.device());
  return elem_ptr<int64_t>(count);
}

Tensor backward_elemt(const Tensor& dy0, const Tensor& x0, const Tensor& mean0,
                      const Tensor& invstd0, const Tensor& weight0, const Tensor& sum_dy0,
                      const Tensor& sum_dy_xmu0, const Tensor& dcount, int64_t hcount) {
  const Tensor dy = dy0.contiguous(), x = x0.contiguous(), mean = mean0.contiguous();
  const Tensor invstd = invstd0.contiguous(), weight = contiguous_or_undefined(weight0);
  const Tensor sum_dy = sum_dy0.contiguous(), sum_dy_xmu = sum_dy_xmu0.contiguous();
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

void running_stats(const Tensor& running_mean, const Tensor& running_var, const Tensor& mean0,
                   const Tensor& var0, const Tensor& dcount, int64_t hcount, double momentum) {
  const Tensor mean = mean0.contiguous(), var = var0.contiguous();
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

ops::BatchNormGathered gather_stats(const Tensor& rows) {
  WEFT_CHECK(rows.device().is_cuda() && rows.dtype() == kFloat32 && rows.is_contiguous() &&
                 rows.dim() == 2 && rows.size(1) >= 2 && rows.size(1) % 2 == 0,
             "CUDA batch_norm_gather_stats: expected contiguous float32 [R, 2 + 2C] rows on a "
             "CUDA device, got ",
             rows.str(), " on ", rows.device());
  const int64_t R = rows.size(0), C = (rows.size(1) - 2) / 2;
  const Device d = rows.device();
  ops::BatchNormGathered out{make_empty({C}, kFloat32, d), make_empty({C}, kFloat32, d), -1,
                             make_empty({1}, kInt64, d)};
  const int64_t threads = C > 0 ? C : 1;
  DeviceScope scope(d.index);
  bn_gather_stats_kernel<<<(unsigned)((threads + kThreads - 1) / kThreads), kThreads, 0,
                           stream_of(d.index)>>>(
      elem_ptr<float>(rows), R, C, elem_ptr<float>(out.mean), elem_ptr<float>(out.var),
      elem_ptr<int64_t>(out.device_count));
  WEFT_CUDA_CHECK_LAUNCH();
  return out;
}

// The kernels are float32 only: 16-bit inputs are widened by the op.
bool reduced_native(DType) { return false; }

}  // namespace

WEFT_REGISTER_DISPATCH(ops::batch_norm_stats_stub, CUDA, &stats);
WEFT_REGISTER_DISPATCH(ops::batch_norm_elemt_stub, CUDA, &elemt);
WEFT_REGISTER_DISPATCH(ops::batch_norm_backward_reduce_stub, CUDA, &backward_reduce);
WEFT_REGISTER_DISPATCH(ops::batch_norm_backward_elemt_stub, CUDA, &backward_elemt);
WEFT_REGISTER_DISPATCH(ops::update_running_stats_stub, CUDA, &running_stats);
WEFT_REGISTER_DISPATCH(ops::batch_norm_gather_stats_stub, CUDA, &gather_stats);
WEFT_REGISTER_DISPATCH(ops::batch_norm_reduced_native_stub, CUDA, &reduced_native);

}  // namespace weft::cuda
