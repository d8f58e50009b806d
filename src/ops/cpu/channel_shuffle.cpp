// CPU kernel of ChannelShuffle (ops/stubs/channel_shuffle.h): NC* layouts as one memcpy per
// output channel plane (streaming stores past the caches for large outputs), channels-last as a
// permutation of each pixel's channels, split across threads.
#include "ops/stubs/channel_shuffle.h"

#include <cstring>

#include "ops/cpu/parallel.h"
#include "ops/cpu/stream_copy.h"

namespace weft::cpu {

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

WEFT_REGISTER_DISPATCH(ops::channel_shuffle_stub, CPU, &shuffle);

}  // namespace weft::cpu
