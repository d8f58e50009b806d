// CUDA kernels of the reductions (ops/stubs/reduce.h): sum over any set of dims (double
// accumulators, as the CPU kernel, in a fixed order: deterministic), max/argmax along a dim with
// the CPU's tie and NaN rules, its backward scatter, and softmax/log_softmax along a dim
// (max-shifted, sums in double).
#include <atomic>
#include <cmath>

#include "ops/cuda/loops.cuh"
#include "ops/stubs/reduce.h"
#include "weft/ops.h"

namespace weft::cuda {

namespace {

using detail::DeviceScope;
using detail::elem_ptr;
using detail::kThreads;
using detail::OffsetCalc;
using detail::stream_of;

// Cached per device; DataParallel's threads ask at once, hence the atomics.
int sm_count(int device) {
  static std::atomic<int> counts[64] = {};
  int n = device < 64 ? counts[device].load(std::memory_order_relaxed) : 0;
  if (!n) {
    WEFT_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    if (device < 64) counts[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Sum of a block's values, valid in thread 0.
__device__ double block_sum(double v) {
  __shared__ double part[kThreads / 32];
  v = warp_sum(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0;
  if (warp == 0) v = warp_sum(v);
  return v;
}

// Reduced elements innermost in memory: block (m, c) sums chunk c of output m's elements,
// threads striding through it (coalesced). Blocks stride over m: M may exceed gridDim.x's limit.
__global__ void sum_rows_kernel(const float* x, OffsetCalc<1> kept, OffsetCalc<1> red, int64_t M,
                                int64_t R, int64_t per_chunk, double* partial) {
  const int64_t c = blockIdx.y;
  const int64_t r0 = c * per_chunk, r1 = min(R, r0 + per_chunk);
  for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {  // the same trip count for the block
    int64_t base[1];
    kept.get(m, base);
    double acc = 0;
    for (int64_t r = r0 + threadIdx.x; r < r1; r += blockDim.x) {
      int64_t off[1];
      red.get(r, off);
      acc += x[base[0] + off[0]];
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[m * gridDim.y + c] = acc;
    __syncthreads();  // block_sum's shared slots are read before the next m writes them
  }
}

// Kept elements innermost: thread m sums chunk blockIdx.y of output m (neighbouring threads read
// neighbouring addresses), striding over m past gridDim.x's limit.
__global__ void sum_cols_kernel(const float* x, OffsetCalc<1> kept, OffsetCalc<1> red, int64_t M,
                                int64_t R, int64_t per_chunk, double* partial) {
  const int64_t c = blockIdx.y;
  const int64_t r0 = c * per_chunk, r1 = min(R, r0 + per_chunk);
  for (int64_t m = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; m < M;
       m += (int64_t)gridDim.x * blockDim.x) {
    int64_t base[1];
    kept.get(m, base);
    double acc = 0;
    for (int64_t r = r0; r < r1; ++r) {
      int64_t off[1];
      red.get(r, off);
      acc += x[base[0] + off[0]];
    }
    partial[m * gridDim.y + c] = acc;
  }
}

__global__ void sum_chunks_kernel(const double* partial, int64_t M, int64_t chunks, float* out) {
  for (int64_t m = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; m < M;
       m += (int64_t)gridDim.x * blockDim.x) {
    double s = 0;
    for (int64_t c = 0; c < chunks; ++c) s += partial[m * chunks + c];
    out[m] = (float)s;
  }
}

// An OffsetCalc over the dims of x where mask == want.
OffsetCalc<1> dims_calc(const Tensor& x, const std::vector<bool>& mask, bool want) {
  Shape sz, st;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (mask[d] == want) {
      sz.push_back(x.size(d));
      st.push_back(x.stride(d));
    }
  return detail::make_offset_calc<1>(sz, {&st});
}

// (v, i) pairs for max: NaN beats numbers, then larger values, then the first index.
__device__ __forceinline__ bool better(float v, int64_t i, float bv, int64_t bi) {
  const bool vn = isnan(v), bn = isnan(bv);
  if (vn != bn) return vn;
  if (!vn && v != bv) return v > bv;
  return i < bi;
}

// Rows of n contiguous values, one warp per row (inner == 1).
__global__ void max_rows_kernel(const float* x, int64_t rows, int64_t n, float* vals,
                                int64_t* idx) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = (int64_t)gridDim.x * blockDim.x / 32;
  for (int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32; w < rows; w += warps) {
    const float* row = x + w * n;
    float bv = row[0];
    int64_t bi = 0;
    for (int64_t i = lane; i < n; i += 32)
      if (better(row[i], i, bv, bi)) {
        bv = row[i];
        bi = i;
      }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_down_sync(0xffffffffu, bv, o);
      const int64_t oi = __shfl_down_sync(0xffffffffu, bi, o);
      if (better(ov, oi, bv, bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (lane == 0) {
      vals[w] = bv;
      idx[w] = bi;
    }
  }
}

// One thread per (outer, inner) position, walking the n values `inner` apart.
__global__ void max_strided_kernel(const float* x, int64_t outer, int64_t n, int64_t inner,
                                   float* vals, int64_t* idx) {
  const int64_t total = outer * inner;
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < total;
       r += (int64_t)gridDim.x * blockDim.x) {
    const int64_t o = r / inner, in = r % inner;
    const float* p = x + o * n * inner + in;
    float bv = p[0];
    int64_t bi = 0;
    for (int64_t i = 1; i < n; ++i) {
      const float v = p[i * inner];
      if (v > bv || (isnan(v) && !isnan(bv))) {
        bv = v;
        bi = i;
      }
    }
    vals[r] = bv;
    idx[r] = bi;
  }
}

__global__ void max_backward_kernel(const float* g, const int64_t* idx, int64_t total, int64_t n,
                                    int64_t inner, float* gx) {
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < total;
       r += (int64_t)gridDim.x * blockDim.x) {
    const int64_t o = r / inner, in = r % inner;
    gx[(o * n + idx[r]) * inner + in] = g[r];
  }
}

// Softmax over contiguous rows, one warp per row: the CPU's formula (exp in double).
__global__ void softmax_rows_kernel(const float* x, int64_t rows, int64_t n, bool log_out,
                                    float* out) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = (int64_t)gridDim.x * blockDim.x / 32;
  for (int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32; w < rows; w += warps) {
    const float* row = x + w * n;
    float* o = out + w * n;
    float mx = -INFINITY;
    for (int64_t i = lane; i < n; i += 32) mx = fmaxf(mx, row[i]);
    for (int k = 16; k > 0; k >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, k));
    double s = 0;
    for (int64_t i = lane; i < n; i += 32) s += exp((double)row[i] - mx);
    for (int k = 16; k > 0; k >>= 1) s += __shfl_xor_sync(0xffffffffu, s, k);
    if (log_out) {
      const float lse = (float)(mx + log(s));
      for (int64_t i = lane; i < n; i += 32) o[i] = row[i] - lse;
    } else {
      for (int64_t i = lane; i < n; i += 32) o[i] = (float)(exp((double)row[i] - mx) / s);
    }
  }
}

__global__ void softmax_strided_kernel(const float* x, int64_t outer, int64_t n, int64_t inner,
                                       bool log_out, float* out) {
  const int64_t total = outer * inner;
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < total;
       r += (int64_t)gridDim.x * blockDim.x) {
    const int64_t base = (r / inner) * n * inner + r % inner;
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) mx = fmaxf(mx, x[base + i * inner]);
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += exp((double)x[base + i * inner] - mx);
    const float lse = (float)(mx + log(s));
    for (int64_t i = 0; i < n; ++i) {
      const float v = x[base + i * inner];
      out[base + i * inner] = log_out ? v - lse : (float)(exp((double)v - mx) / s);
    }
  }
}

void check_cuda_float(const Tensor& x, const char* op) {
  WEFT_CHECK(x.device().is_cuda(), op, ": expected a CUDA tensor, got one on ", x.device());
  WEFT_CHECK(x.dtype() == kFloat32, op, " expects float32, got ", x.str());
}

// (outer, n, inner) of a contiguous tensor around dim d.
void around(const Tensor& x, int64_t d, int64_t& outer, int64_t& n, int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= x.size(i);
  for (int64_t i = d + 1; i < x.dim(); ++i) inner *= x.size(i);
  n = x.size(d);
}

Tensor sum(const Tensor& x, const std::vector<bool>& mask) {
  check_cuda_float(x, "sum");
  Shape keep;
  for (int64_t d = 0; d < x.dim(); ++d) keep.push_back(mask[d] ? 1 : x.size(d));
  Tensor out = make_empty(keep, kFloat32, x.device());
  const int64_t M = out.numel(), R = M ? x.numel() / M : 0;
  if (M == 0) return out;
  if (R == 0) return out.zero_();
  const int dev = x.device().index;
  DeviceScope scope(dev);
  cudaStream_t stream = stream_of(dev);
  const OffsetCalc<1> kept = dims_calc(x, mask, false), red = dims_calc(x, mask, true);
  // Rows when the reduced elements are the ones adjacent in memory and there are enough of them
  // for a block each; columns otherwise (a block per 2-element row would idle 254 threads).
  const bool rows = red.ndim > 0 && red.strides[red.ndim - 1][0] == 1 && R >= 32;
  const int64_t target_blocks = 4 * (int64_t)sm_count(dev);
  const int64_t m_blocks = rows ? M : (M + kThreads - 1) / kThreads;
  const int64_t min_per_chunk = rows ? 4 * kThreads : 64;
  int64_t chunks = std::max<int64_t>(
      1, std::min<int64_t>((R + min_per_chunk - 1) / min_per_chunk, target_blocks / m_blocks));
  chunks = std::min<int64_t>(chunks, 65535);  // gridDim.y's limit
  const int64_t per_chunk = (R + chunks - 1) / chunks;
  chunks = (R + per_chunk - 1) / per_chunk;
  Tensor partial = make_empty({M * chunks}, kInt64, x.device());  // 8-byte slots for doubles
  double* pp = static_cast<double*>(partial.device_ptr());
  const float* px = elem_ptr<float>(x);
  // gridDim.x capped at its limit; the kernels stride over the outputs beyond it.
  const dim3 grid((unsigned)std::min(m_blocks, detail::kMaxGridX), (unsigned)chunks);
  if (rows)
    sum_rows_kernel<<<grid, kThreads, 0, stream>>>(px, kept, red, M, R, per_chunk, pp);
  else
    sum_cols_kernel<<<grid, kThreads, 0, stream>>>(px, kept, red, M, R, per_chunk, pp);
  WEFT_CUDA_CHECK_LAUNCH();
  sum_chunks_kernel<<<detail::grid_for(M), kThreads, 0, stream>>>(pp, M, chunks,
                                                                  elem_ptr<float>(out));
  WEFT_CUDA_CHECK_LAUNCH();
  return out;
}

std::pair<Tensor, Tensor> max(const Tensor& x0, int64_t d) {
  check_cuda_float(x0, "max");
  const Tensor x = x0.detach().contiguous();
  int64_t outer, n, inner;
  around(x, d, outer, n, inner);
  Shape keep = x.sizes();
  keep[d] = 1;
  Tensor vals = make_empty(keep, kFloat32, x.device()), idx = make_empty(keep, kInt64, x.device());
  const int64_t m = outer * inner;
  if (m == 0) return {vals, idx};
  const int dev = x.device().index;
  DeviceScope scope(dev);
  cudaStream_t stream = stream_of(dev);
  if (inner == 1)
    max_rows_kernel<<<detail::grid_for(m * 32), kThreads, 0, stream>>>(
        elem_ptr<float>(x), m, n, elem_ptr<float>(vals), elem_ptr<int64_t>(idx));
  else
    max_strided_kernel<<<detail::grid_for(m), kThreads, 0, stream>>>(
        elem_ptr<float>(x), outer, n, inner, elem_ptr<float>(vals), elem_ptr<int64_t>(idx));
  WEFT_CUDA_CHECK_LAUNCH();
  return {vals, idx};
}

Tensor max_backward(const Tensor& g0, const Tensor& idx0, const Shape& x_shape, int64_t d,
                    const Shape& in_shape) {
  Tensor gx = zeros(x_shape, {.device = g0.device()});
  const Tensor g = g0.detach().contiguous(), idx = idx0.contiguous();
  int64_t outer, n, inner;
  around(gx, d, outer, n, inner);
  const int64_t total = outer * inner;
  if (total == 0) return gx.view(in_shape);
  const int dev = g.device().index;
  DeviceScope scope(dev);
  max_backward_kernel<<<detail::grid_for(total), kThreads, 0, stream_of(dev)>>>(
      elem_ptr<float>(g), elem_ptr<int64_t>(idx), total, n, inner, elem_ptr<float>(gx));
  WEFT_CUDA_CHECK_LAUNCH();
  return gx.view(in_shape);
}

Tensor softmax(const Tensor& x0, int64_t d, bool log) {
  check_cuda_float(x0, "softmax");
  const Tensor x = x0.detach().contiguous();
  int64_t outer, n, inner;
  around(x, d, outer, n, inner);
  Tensor out = make_empty(x.sizes(), kFloat32, x.device());
  const int64_t m = outer * inner;
  if (m == 0 || n == 0) return out;
  const int dev = x.device().index;
  DeviceScope scope(dev);
  cudaStream_t stream = stream_of(dev);
  if (inner == 1)
    softmax_rows_kernel<<<detail::grid_for(m * 32), kThreads, 0, stream>>>(
        elem_ptr<float>(x), m, n, log, elem_ptr<float>(out));
  else
    softmax_strided_kernel<<<detail::grid_for(m), kThreads, 0, stream>>>(
        elem_ptr<float>(x), outer, n, inner, log, elem_ptr<float>(out));
  WEFT_CUDA_CHECK_LAUNCH();
  return out;
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::sum_stub, CUDA, &sum);
WEFT_REGISTER_DISPATCH(ops::max_stub, CUDA, &max);
WEFT_REGISTER_DISPATCH(ops::max_backward_stub, CUDA, &max_backward);
WEFT_REGISTER_DISPATCH(ops::softmax_stub, CUDA, &softmax);

}  // namespace weft::cuda
