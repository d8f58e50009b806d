// ChannelShuffle's CUDA kernel (ops/stubs/channel_shuffle.h): one read and one write per element,
// writes coalesced. NCHW: output plane (n, o) is input plane (n, j*cpg + i) for o = i*groups + j,
// copied with 128-bit accesses when the planes allow. Channels-last: each pixel's C channels are
// permuted, four outputs per thread written as one 128-bit store, reads gathered from the same
// pixel (cached lines).
#include "ops/cuda/loops.cuh"
#include "ops/stubs/channel_shuffle.h"

namespace weft::cuda {

namespace {

using detail::elem_ptr;
using detail::kThreads;

// Index math in 32 bits when everything fits (integer division is the kernel's only cost).
template <typename Index, typename V>
__global__ void shuffle_planes_kernel(const V* __restrict__ in, V* __restrict__ out, Index total,
                                      Index plane, Index C, Index groups, Index cpg) {
  for (Index e = blockIdx.x * (Index)blockDim.x + threadIdx.x; e < total;
       e += (Index)gridDim.x * blockDim.x) {
    const Index r = e / plane, k = e - r * plane;  // output plane r = n*C + o
    const Index n = r / C, o = r - n * C;
    const Index i = o / groups, j = o - i * groups;
    out[e] = in[(n * C + j * cpg + i) * plane + k];
  }
}

template <typename Index>
__global__ void shuffle_pixels_kernel(const float* __restrict__ in, float* __restrict__ out,
                                      Index total4, Index C, Index groups, Index cpg) {
  const Index C4 = C / 4;
  for (Index e = blockIdx.x * (Index)blockDim.x + threadIdx.x; e < total4;
       e += (Index)gridDim.x * blockDim.x) {
    const Index p = e / C4, o0 = (e - p * C4) * 4;
    const float* src = in + p * C;
    float4 v;
    float* vs = &v.x;
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const Index o = o0 + t, i = o / groups, j = o - i * groups;
      vs[t] = src[j * cpg + i];
    }
    reinterpret_cast<float4*>(out)[e] = v;
  }
}

template <typename Index>
__global__ void shuffle_pixels_scalar_kernel(const float* __restrict__ in, float* __restrict__ out,
                                             Index total, Index C, Index groups, Index cpg) {
  for (Index e = blockIdx.x * (Index)blockDim.x + threadIdx.x; e < total;
       e += (Index)gridDim.x * blockDim.x) {
    const Index p = e / C, o = e - p * C, i = o / groups, j = o - i * groups;
    out[e] = in[p * C + j * cpg + i];
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename Index>
void launch(const float* in, float* out, int64_t N, int64_t C, int64_t inner, int64_t groups,
            bool channels_last, cudaStream_t stream) {
  const int64_t total = N * C * inner, cpg = C / groups;
  if (!channels_last) {
    if (inner % 4 == 0 && aligned16(in) && aligned16(out)) {
      shuffle_planes_kernel<Index, float4><<<detail::grid_for(total / 4), kThreads, 0, stream>>>(
          reinterpret_cast<const float4*>(in), reinterpret_cast<float4*>(out), (Index)(total / 4),
          (Index)(inner / 4), (Index)C, (Index)groups, (Index)cpg);
    } else {
      shuffle_planes_kernel<Index, float><<<detail::grid_for(total), kThreads, 0, stream>>>(
          in, out, (Index)total, (Index)inner, (Index)C, (Index)groups, (Index)cpg);
    }
  } else if (C % 4 == 0 && aligned16(out)) {
    shuffle_pixels_kernel<Index><<<detail::grid_for(total / 4), kThreads, 0, stream>>>(
        in, out, (Index)(total / 4), (Index)C, (Index)groups, (Index)cpg);
  } else {
    shuffle_pixels_scalar_kernel<Index><<<detail::grid_for(total), kThreads, 0, stream>>>(
        in, out, (Index)total, (Index)C, (Index)groups, (Index)cpg);
  }
  WEFT_CUDA_CHECK_LAUNCH();
}

Tensor channel_shuffle(const Tensor& x, int64_t groups) {
  WEFT_CHECK(x.device().is_cuda() && x.dtype() == kFloat32,
             "cuda::channel_shuffle expects a float32 CUDA tensor, got ", x.str(), " on ",
             x.device());
  const int64_t N = x.size(0), C = x.size(1);
  const bool cl = is_channels_last(x);
  Tensor xc = cl ? x : x.detach().contiguous();
  // Channels-last in, channels-last out: a fresh NHWC buffer viewed as NCHW.
  Tensor out =
      cl ? make_empty({N, x.size(2), x.size(3), C}, kFloat32, x.device()).permute({0, 3, 1, 2})
         : make_empty(x.sizes(), kFloat32, x.device());
  if (x.numel() == 0) return out;
  const int64_t inner = x.numel() / (N * C);
  const int dev = x.device().index;
  detail::DeviceScope scope(dev);
  const float* in = elem_ptr<float>(xc);
  float* o = static_cast<float*>(out.device_ptr());
  if (x.numel() < (int64_t(1) << 31))
    launch<uint32_t>(in, o, N, C, inner, groups, cl, detail::stream_of(dev));
  else
    launch<int64_t>(in, o, N, C, inner, groups, cl, detail::stream_of(dev));
  return out;
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::channel_shuffle_stub, CUDA, &channel_shuffle);

}  // namespace weft::cuda
