#include "weft/nn/channel_shuffle.h"

#include <cstring>

#include "ops/cpu/parallel.h"
#include "ops/cpu/stream_copy.h"
#include "ops/cuda/cuda_ops.h"  // called in builds WITH_CUDA only
#include "weft/autograd.h"
#include "weft/ops.h"

namespace weft::nn {

Tensor to_channels_last(const Tensor& t) {
  WEFT_CHECK(t.dim() == 4, "to_channels_last expects a 4-D tensor, got ", t.str());
  // NHWC storage viewed back as NCHW: permute a contiguous NHWC tensor.
  Tensor nhwc = t.permute({0, 2, 3, 1}).contiguous();
  return nhwc.permute({0, 3, 1, 2});
}

namespace {

// Shuffles `in` (same layout as out) into `out`. Layouts: NC* contiguous, where each channel
// is a contiguous plane of `inner` elements; or channels-last, where each pixel holds C
// contiguous channels.
void shuffle_kernel(const float* in, float* out, int64_t N, int64_t C, int64_t inner,
                    int64_t groups, bool channels_last) {
  const int64_t cpg = C / groups;
  if (!channels_last) {
    const size_t plane = (size_t)inner * sizeof(float);
    // Outputs larger than the caches are written with streaming stores, as a big memcpy is.
    const bool stream = (size_t)(N * C) * plane > ((size_t)4 << 20);
    cpu::parallel_for(0, N * C, std::max<int64_t>(1, cpu::kGrainSize / std::max<int64_t>(inner, 1)),
                      [&](int64_t r0, int64_t r1) {
                        for (int64_t r = r0; r < r1; ++r) {
                          const int64_t n = r / C, o = r % C;
                          const int64_t i = o / groups, j = o % groups;  // o = i*groups + j
                          const float* src = in + (n * C + j * cpg + i) * inner;
                          if (stream)
                            cpu::stream_copy(out + r * inner, src, inner);
                          else
                            std::memcpy(out + r * inner, src, plane);
                        }
                        if (stream) cpu::stream_fence();
                      });
    return;
  }
  cpu::parallel_for(0, N * inner, std::max<int64_t>(1, cpu::kGrainSize / C),
                    [&](int64_t p0, int64_t p1) {
                      for (int64_t p = p0; p < p1; ++p) {
                        const float* src = in + p * C;
                        float* dst = out + p * C;
                        // Contiguous reads along each group; writes stride by `groups`.
                        for (int64_t j = 0; j < groups; ++j) {
                          const float* s = src + j * cpg;
                          float* d = dst + j;
                          for (int64_t i = 0; i < cpg; ++i) d[i * groups] = s[i];
                        }
                      }
                    });
}

Tensor shuffle(const Tensor& x, int64_t groups) {
#ifdef WEFT_WITH_CUDA
  if (x.device().is_cuda()) return cuda::channel_shuffle(x, groups);
#endif
  const int64_t N = x.size(0), C = x.size(1);
  if (x.numel() == 0) return make_empty(x.sizes(), kFloat32, x.device());
  const int64_t inner = x.numel() / (N * C);
  if (is_channels_last(x)) {
    // A fresh NHWC buffer viewed as NCHW (no copy).
    Tensor out =
        make_empty({N, x.size(2), x.size(3), C}, kFloat32, x.device()).permute({0, 3, 1, 2});
    shuffle_kernel(static_cast<const float*>(x.raw_data()), static_cast<float*>(out.raw_data()), N,
                   C, inner, groups, true);
    return out;
  }
  Tensor xc = x.contiguous();
  Tensor out = make_empty(x.sizes(), kFloat32, x.device());
  shuffle_kernel(xc.data_ptr<float>(), out.data_ptr<float>(), N, C, inner, groups, false);
  return out;
}

}  // namespace

namespace functional {

Tensor channel_shuffle(const Tensor& input, int64_t groups) {
  WEFT_CHECK(input.dim() >= 3, "channel_shuffle expects an input of rank >= 3 [N, C, *], got ",
             input.str());
  WEFT_CHECK(is_floating_point(input.dtype()),
             "channel_shuffle expects a floating point input, got ", input.str());
  WEFT_CHECK(groups > 0, "channel_shuffle: groups must be positive, got ", groups);
  const int64_t C = input.size(1);
  WEFT_CHECK(C % groups == 0, "channel_shuffle: number of channels ", C,
             " must be divisible by groups ", groups);
  if (is_reduced_float(input.dtype()))  // exact: the values only move
    return channel_shuffle(input.to(kFloat32), groups).to(input.dtype());
  Tensor out = shuffle(input, groups);
  // The inverse of shuffling with g groups is shuffling with C/g groups.
  autograd::record("ChannelShuffleBackward", {&input}, out, [groups, C](std::vector<Tensor>& g) {
    return std::vector<Tensor>{shuffle(g[0], C / groups)};
  });
  return out;
}

}  // namespace functional

ChannelShuffleImpl::ChannelShuffleImpl(int64_t groups)
    : Cloneable("ChannelShuffle"), groups(groups) {
  WEFT_CHECK(groups > 0, "ChannelShuffle: groups must be positive, got ", groups);
}

}  // namespace weft::nn
