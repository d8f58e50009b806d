// CPU kernels of 2-D max and average pooling (ops/stubs/pooling.h): max pooling's usual 2x2
// windows a row per vector step (float32 or bf16), other windows as branch-free loops over each
// window offset, split across planes; average pooling summing each window in double, global
// pooling as one vectorised sum a plane.
#include "ops/stubs/pooling.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "ops/cpu/max_pool2x2.h"
#include "ops/cpu/parallel.h"
#include "ops/cpu/reduce_lanes.h"
#include "weft/ops.h"

namespace weft::cpu {

namespace {

using AvgWindows = ops::AvgPoolWindows;

// Whether a window's maximum takes v over the current one: a NaN is always taken, as in
// PyTorch (so the last NaN of a window wins); otherwise only a strictly greater value (so the
// first maximum in row-major order wins). Bitwise | keeps it branch-free.
inline bool takes(float v, float cur) { return (v > cur) | (v != v); }

// 2x2 windows at stride 2, no padding, every window inside the input (the usual CNN pooling):
// a row of outputs per vector step (max_pool2x2.h). The general loop below runs its inner loops
// over output columns, which at these sizes (7 to 14) are too short to vectorise, and its
// data-dependent selects mispredict: it costs about 10x more.
bool fits_2x2(const Tensor& x, const ops::MaxPool2dParams& p) {
  const int64_t H = x.size(2), W = x.size(3);
  return cpu::kMaxPool2x2Available && p.kh == 2 && p.kw == 2 && p.sh == 2 && p.sw == 2 &&
         p.ph == 0 && p.pw == 0 && 2 * p.Ho <= H && 2 * p.Wo <= W && H * W <= INT32_MAX;
}

// T: float, or uint16_t for bf16's bits.
template <typename T>
std::pair<Tensor, Tensor> max_pool2x2(const Tensor& x, const ops::MaxPool2dParams& p) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), Ho = p.Ho, Wo = p.Wo;
  Tensor out = make_empty({N, C, Ho, Wo}, x.dtype(), x.device());
  Tensor idx = make_empty({N, C, Ho, Wo}, kInt64, x.device());
  const T* px = static_cast<const T*>(x.raw_data());
  T* po = static_cast<T*>(out.raw_data());
  int64_t* pi = idx.data_ptr<int64_t>();
  cpu::parallel_for(0, N * C, std::max<int64_t>(1, cpu::kGrainSize / std::max<int64_t>(H * W, 1)),
                    [&](int64_t r0, int64_t r1) {
                      for (int64_t nc = r0; nc < r1; ++nc)
                        for (int64_t oh = 0; oh < Ho; ++oh)
                          cpu::max_pool2x2_row(px + nc * H * W, W, oh, Wo, po + (nc * Ho + oh) * Wo,
                                               pi + (nc * Ho + oh) * Wo);
                    });
  return {out, idx};
}

std::pair<Tensor, Tensor> max_pool2d(const Tensor& x, const ops::MaxPool2dParams& p) {
  // 2x2 windows at stride 2, no padding, every window inside the input (the usual CNN
  // pooling): a row of outputs per vector step (max_pool2x2.h), in float32 or bf16. The general
  // loop below runs its inner loops over output columns, which at these sizes (7 to 14) are too
  // short to vectorise, and its data-dependent selects mispredict: it costs about 10x more.
  if (fits_2x2(x, p))
    return x.dtype() == DType::BFloat16 ? max_pool2x2<uint16_t>(x, p) : max_pool2x2<float>(x, p);
  if (x.dtype() == DType::BFloat16) {  // exact: the maximum of widened values is one of them
    auto [out, idx] = max_pool2d(x.to(kFloat32), p);
    return {out.to(DType::BFloat16), idx};
  }
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), Ho = p.Ho, Wo = p.Wo;
  Tensor out = make_empty({N, C, Ho, Wo}, kFloat32, x.device());
  Tensor idx = make_empty({N, C, Ho, Wo}, kInt64, x.device());
  const float* px = x.data_ptr<float>();
  float* po = out.data_ptr<float>();
  int64_t* pi = idx.data_ptr<int64_t>();
  const int64_t kh = p.kh, kw = p.kw, sh = p.sh, sw = p.sw, ph = p.ph, pw = p.pw;
  cpu::parallel_for(0, N * C, std::max<int64_t>(1, cpu::kGrainSize / std::max<int64_t>(H * W, 1)),
                    [&](int64_t r0, int64_t r1) {
                      for (int64_t nc = r0; nc < r1; ++nc) {
                        const float* plane = px + nc * H * W;
                        float* o = po + nc * Ho * Wo;
                        int64_t* oi = pi + nc * Ho * Wo;
                        for (int64_t oh = 0; oh < Ho; ++oh) {
                          const int64_t h0 = oh * sh - ph;
                          const int64_t hs = std::max<int64_t>(h0, 0), he = std::min(h0 + kh, H);
                          float* ob = o + oh * Wo;
                          int64_t* ib = oi + oh * Wo;
                          for (int64_t ow = 0; ow < Wo; ++ow) {
                            ob[ow] = -INFINITY;
                            ib[ow] = hs * W + std::max<int64_t>(ow * sw - pw, 0);
                          }
                          // Window offsets outermost, output columns innermost: straight-line,
                          // vectorisable loops, visiting each window in row-major order so the
                          // first maximum wins.
                          for (int64_t i = hs; i < he; ++i)
                            for (int64_t j = 0; j < kw; ++j) {
                              const int64_t off = j - pw;
                              const int64_t lo = off >= 0 ? 0 : std::min(Wo, (-off + sw - 1) / sw);
                              const int64_t hi = std::max(
                                  lo, (W - 1 - off) < 0 ? 0 : std::min(Wo, (W - 1 - off) / sw + 1));
                              const float* __restrict row = plane + i * W + off;
                              float* __restrict obr = ob;
                              int64_t* __restrict ibr = ib;
                              const int64_t base = i * W + off;
                              for (int64_t ow = lo; ow < hi; ++ow) {
                                const float v = row[ow * sw], cur = obr[ow];
                                const bool take = takes(v, cur);
                                obr[ow] = take ? v : cur;
                                ibr[ow] = take ? base + ow * sw : ibr[ow];
                              }
                            }
                        }
                      }
                    });
  return {out, idx};
}

// Windows that do not overlap (kernel <= stride): each input receives at most one gradient, so
// it is copied, not added, and bf16 gradients need no float32 detour. Negative zero becomes +0,
// as it does added to the zeros: T is float, or uint16_t holding bf16's bits (-0 is 0x8000).
template <typename T>
Tensor scatter_disjoint(const Tensor& dy, const Tensor& idx, const Shape& in_shape) {
  Tensor dx = make_empty(in_shape, dy.dtype(), dy.device());
  std::memset(dx.raw_data(), 0, dx.nbytes());
  const int64_t plane_in = in_shape[2] * in_shape[3], plane_out = dy.size(2) * dy.size(3);
  const T* pd = static_cast<const T*>(dy.raw_data());
  const int64_t* pi = idx.data_ptr<int64_t>();
  T* px = static_cast<T*>(dx.raw_data());
  const auto plus_zero = [](T v) {
    if constexpr (std::is_same_v<T, float>)
      return v == 0.0f ? 0.0f : v;
    else
      return v == 0x8000 ? T(0) : v;
  };
  cpu::parallel_for(0, in_shape[0] * in_shape[1],
                    std::max<int64_t>(1, cpu::kGrainSize / std::max<int64_t>(plane_in, 1)),
                    [&](int64_t r0, int64_t r1) {
                      for (int64_t nc = r0; nc < r1; ++nc)
                        for (int64_t o = 0; o < plane_out; ++o)
                          px[nc * plane_in + pi[nc * plane_out + o]] =
                              plus_zero(pd[nc * plane_out + o]);
                    });
  return dx;
}

Tensor max_pool2d_backward(const Tensor& g, const Tensor& idx, const Shape& in_shape,
                           const ops::MaxPool2dParams& p) {
  Tensor dy = g.contiguous();
  const bool disjoint = p.kh <= p.sh && p.kw <= p.sw;
  if (dy.dtype() == DType::BFloat16) {
    if (disjoint) return scatter_disjoint<uint16_t>(dy, idx, in_shape);
    return max_pool2d_backward(dy.to(kFloat32), idx, in_shape, p).to(DType::BFloat16);
  }
  if (disjoint) return scatter_disjoint<float>(dy, idx, in_shape);
  Tensor dx = zeros(in_shape);
  const int64_t plane_in = in_shape[2] * in_shape[3], plane_out = dy.size(2) * dy.size(3);
  const float* pd = dy.data_ptr<float>();
  const int64_t* pi = idx.data_ptr<int64_t>();
  float* px = dx.data_ptr<float>();
  for (int64_t nc = 0; nc < in_shape[0] * in_shape[1]; ++nc)
    for (int64_t o = 0; o < plane_out; ++o)
      px[nc * plane_in + pi[nc * plane_out + o]] += pd[nc * plane_out + o];
  return dx;
}

// One window covering the whole plane (global pooling, as in classifier heads): a plain
// vectorised sum per plane forward, a fill per plane backward.
bool is_global(const AvgWindows& win, int64_t H, int64_t W) {
  return win.div.size() == 1 && win.h0[0] == 0 && win.h1[0] == H && win.w0[0] == 0 &&
         win.w1[0] == W;
}

Tensor avg_pool_apply(const Tensor& x, const AvgWindows& win, int64_t Ho, int64_t Wo) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor out = make_empty({N, C, Ho, Wo}, kFloat32, x.device());
  const float* px = x.data_ptr<float>();
  float* po = out.data_ptr<float>();
  if (is_global(win, H, W)) {
    cpu::parallel_for(0, N * C, std::max<int64_t>(1, cpu::kGrainSize / (H * W)),
                      [&](int64_t b, int64_t e) {
                        for (int64_t nc = b; nc < e; ++nc)
                          po[nc] = (float)(cpu::lane_sum(px + nc * H * W, H * W) / win.div[0]);
                      });
    return out;
  }
  for (int64_t nc = 0; nc < N * C; ++nc) {
    const float* plane = px + nc * H * W;
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        double sum = 0;
        for (int64_t i = win.h0[oh]; i < win.h1[oh]; ++i)
          for (int64_t j = win.w0[ow]; j < win.w1[ow]; ++j) sum += plane[i * W + j];
        po[(nc * Ho + oh) * Wo + ow] = (float)(sum / win.div[oh * Wo + ow]);
      }
  }
  return out;
}

Tensor avg_pool_backward(const Tensor& g, const AvgWindows& win, const Shape& in_shape) {
  Tensor dy = g.contiguous();
  const int64_t H = in_shape[2], W = in_shape[3], Ho = dy.size(2), Wo = dy.size(3);
  const float* pd = dy.data_ptr<float>();
  if (is_global(win, H, W)) {
    Tensor dx = make_empty(in_shape, kFloat32, g.device());
    float* px = dx.data_ptr<float>();
    cpu::parallel_for(0, in_shape[0] * in_shape[1], std::max<int64_t>(1, cpu::kGrainSize / (H * W)),
                      [&](int64_t b, int64_t e) {
                        for (int64_t nc = b; nc < e; ++nc)
                          std::fill_n(px + nc * H * W, H * W, (float)(pd[nc] / win.div[0]));
                      });
    return dx;
  }
  Tensor dx = zeros(in_shape);
  float* px = dx.data_ptr<float>();
  for (int64_t nc = 0; nc < in_shape[0] * in_shape[1]; ++nc) {
    float* plane = px + nc * H * W;
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        float v = (float)(pd[(nc * Ho + oh) * Wo + ow] / win.div[oh * Wo + ow]);
        for (int64_t i = win.h0[oh]; i < win.h1[oh]; ++i)
          for (int64_t j = win.w0[ow]; j < win.w1[ow]; ++j) plane[i * W + j] += v;
      }
  }
  return dx;
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::max_pool2d_stub, CPU, &max_pool2d);
WEFT_REGISTER_DISPATCH(ops::max_pool2d_backward_stub, CPU, &max_pool2d_backward);
WEFT_REGISTER_DISPATCH(ops::avg_pool2d_stub, CPU, &avg_pool_apply);
WEFT_REGISTER_DISPATCH(ops::avg_pool2d_backward_stub, CPU, &avg_pool_backward);

}  // namespace weft::cpu
