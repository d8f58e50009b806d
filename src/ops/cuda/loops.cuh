// Internal to the CUDA kernels: strided N-operand elementwise loops. An OffsetCalc maps a linear
// index over a shape to each operand's element offset (dims that are contiguous for every
// operand are merged first, so most ops index one flat dimension); launch_elementwise runs a
// functor over it with a grid-stride loop on the device's current stream.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cuda/std/tuple>
#include <utility>
#include <vector>

#include "cuda/cuda_check.h"
#include "weft/tensor.h"

namespace weft::cuda::detail {

constexpr int kMaxDims = 12;
constexpr int kThreads = 256;

template <int N>
struct OffsetCalc {
  int ndim = 0;
  int64_t sizes[kMaxDims];
  int64_t strides[kMaxDims][N];

  __device__ __forceinline__ void get(int64_t linear, int64_t (&off)[N]) const {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t size = sizes[d];
      const int64_t i = linear % size;
      linear /= size;
#pragma unroll
      for (int k = 0; k < N; ++k) off[k] += i * strides[d][k];
    }
  }
};

// Merges dims over `shape` given each operand's strides (in elements). Throws when more than
// kMaxDims dims remain after merging.
template <int N>
OffsetCalc<N> make_offset_calc(const Shape& shape, const std::array<const Shape*, N>& strides) {
  std::vector<int64_t> sz;
  std::vector<std::array<int64_t, N>> st;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (!sz.empty()) {
      bool merge = true;
      for (int k = 0; k < N; ++k)
        if (st.back()[k] != (*strides[k])[d] * shape[d]) merge = false;
      if (merge) {
        sz.back() *= shape[d];
        for (int k = 0; k < N; ++k) st.back()[k] = (*strides[k])[d];
        continue;
      }
    }
    sz.push_back(shape[d]);
    std::array<int64_t, N> s;
    for (int k = 0; k < N; ++k) s[k] = (*strides[k])[d];
    st.push_back(s);
  }
  WEFT_CHECK((int)sz.size() <= kMaxDims, "CUDA kernel: ", sz.size(),
             " non-mergeable dims exceed the limit of ", kMaxDims);
  OffsetCalc<N> oc;
  oc.ndim = (int)sz.size();
  for (int d = 0; d < oc.ndim; ++d) {
    oc.sizes[d] = sz[d];
    for (int k = 0; k < N; ++k) oc.strides[d][k] = st[d][k];
  }
  return oc;
}

// CUDA's limit on gridDim.x (gridDim.y and z stop at 65535).
constexpr int64_t kMaxGridX = 2147483647;

// Blocks of kThreads for n threads' worth of work: one thread each, capped only by kMaxGridX, so
// that a kernel launched with it covers n even without a grid-stride loop (a cap of 65536 left
// the elements past 2^24 of such a kernel undone). The kernels loop past the cap.
inline unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return (unsigned)std::clamp<int64_t>(blocks, 1, kMaxGridX);
}

// Element pointer of a tensor on its device: storage base plus the view's offset.
template <typename T>
T* elem_ptr(const Tensor& t) {
  return static_cast<T*>(t.impl()->storage->data) + t.storage_offset();
}

template <int N, typename Op, typename OutT, typename... InT, size_t... I>
__device__ __forceinline__ void apply_at(const int64_t (&off)[N], const Op& op, OutT* out,
                                         std::index_sequence<I...>, const InT*... in) {
  out[off[0]] = op(in[off[I + 1]]...);
}

// op over every element: `out` and each input have their own strides (in elements) over the
// common shape.
template <typename Op, typename OutT, typename... InT>
__global__ void elementwise_kernel(int64_t n, OffsetCalc<1 + sizeof...(InT)> oc, Op op, OutT* out,
                                   const InT*... in) {
  constexpr int N = 1 + sizeof...(InT);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[N];
    oc.get(i, off);
    apply_at<N>(off, op, out, std::index_sequence_for<InT...>{}, in...);
  }
}

template <typename T>
struct alignas(4 * sizeof(T)) Vec4 {
  T v[4];
};

// Every operand contiguous and aligned: 4 elements per thread step, with 128-bit loads and stores
// for 4-byte types; the last n % 4 elements are done one by one.
template <typename Op, typename OutT, typename... InT>
__global__ void elementwise_vec4_kernel(int64_t n, Op op, OutT* out, const InT*... in) {
  const int64_t n4 = n / 4;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  for (int64_t i = tid; i < n4; i += stride) {
    Vec4<OutT> o;
    const auto loaded = ::cuda::std::make_tuple(reinterpret_cast<const Vec4<InT>*>(in)[i]...);
#pragma unroll
    for (int j = 0; j < 4; ++j)
      o.v[j] = ::cuda::std::apply([&](const auto&... x) { return op(x.v[j]...); }, loaded);
    reinterpret_cast<Vec4<OutT>*>(out)[i] = o;
  }
  for (int64_t i = 4 * n4 + tid; i < n; i += stride) out[i] = op(in[i]...);
}

// Flat version when every operand is contiguous but not aligned for vector access.
template <typename Op, typename OutT, typename... InT>
__global__ void elementwise_flat_kernel(int64_t n, Op op, OutT* out, const InT*... in) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i] = op(in[i]...);
}

// out = op(inputs...) elementwise; every input already has out's shape (expand() first).
// `out` may be one of the inputs (in-place ops): each element is read before it is written.
template <typename OutT, typename... InT, typename Op>
void launch_elementwise(const Tensor& out, Op op, const std::array<Tensor, sizeof...(InT)>& ins) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const int device = out.device().index;
  DeviceScope scope(device);
  cudaStream_t stream = stream_of(device);
  bool flat = out.is_contiguous();
  bool aligned = reinterpret_cast<uintptr_t>(elem_ptr<OutT>(out)) % alignof(Vec4<OutT>) == 0;
  [&]<size_t... I>(std::index_sequence<I...>) {
    ((flat = flat && ins[I].is_contiguous() && ins[I].sizes() == out.sizes()), ...);
    ((aligned =
          aligned && reinterpret_cast<uintptr_t>(elem_ptr<InT>(ins[I])) % alignof(Vec4<InT>) == 0),
     ...);
  }
  (std::index_sequence_for<InT...>{});
  [&]<size_t... I>(std::index_sequence<I...>) {
    if (flat && aligned) {
      elementwise_vec4_kernel<Op, OutT, InT...><<<grid_for((n + 3) / 4), kThreads, 0, stream>>>(
          n, op, elem_ptr<OutT>(out), static_cast<const InT*>(elem_ptr<InT>(ins[I]))...);
    } else if (flat) {
      elementwise_flat_kernel<Op, OutT, InT...><<<grid_for(n), kThreads, 0, stream>>>(
          n, op, elem_ptr<OutT>(out), static_cast<const InT*>(elem_ptr<InT>(ins[I]))...);
    } else {
      constexpr int N = 1 + sizeof...(InT);
      std::array<const Shape*, N> st{&out.strides(), &ins[I].strides()...};
      auto oc = make_offset_calc<N>(out.sizes(), st);
      elementwise_kernel<Op, OutT, InT...><<<grid_for(n), kThreads, 0, stream>>>(
          n, oc, op, elem_ptr<OutT>(out), static_cast<const InT*>(elem_ptr<InT>(ins[I]))...);
    }
  }
  (std::index_sequence_for<InT...>{});
  WEFT_CUDA_CHECK_LAUNCH();
}

}  // namespace weft::cuda::detail
