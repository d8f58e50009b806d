// 2-D max, average and adaptive-average pooling over contiguous NCHW, with backward.
#include <cmath>

#include "ops/cpu/parallel.h"
#include "ops/cpu/reduce_lanes.h"
#ifdef WEFT_WITH_CUDA
#include "ops/cuda/nn_ops.h"
#endif
#include "weft/autograd.h"
#include "weft/nn/functional.h"
#include "weft/ops.h"

namespace weft::nn::functional {

namespace {

int64_t pooled_size(int64_t in, int64_t k, int64_t s, int64_t p, bool ceil_mode) {
  int64_t num = in + 2 * p - k;
  int64_t out = (ceil_mode ? (num + s - 1) / s : num / s) + 1;
  // PyTorch: the last window must start inside the input or left padding.
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

void check_pool(const Tensor& x, std::array<int64_t, 2> k, std::array<int64_t, 2> s,
                std::array<int64_t, 2> p, const char* op) {
  WEFT_CHECK(x.dim() == 4, op, " expects a 4-D input [N, C, H, W], got ", x.str());
  WEFT_CHECK(is_floating_point(x.dtype()), op, " expects a floating point input, got ", x.str());
  WEFT_CHECK(k[0] > 0 && k[1] > 0 && s[0] > 0 && s[1] > 0, op,
             ": kernel and stride must be positive");
  WEFT_CHECK(p[0] >= 0 && p[1] >= 0 && p[0] * 2 <= k[0] && p[1] * 2 <= k[1], op,
             ": padding must be non-negative and at most half the kernel size");
}

}  // namespace

Tensor max_pool2d(const Tensor& input, std::array<int64_t, 2> k, std::array<int64_t, 2> s,
                  std::array<int64_t, 2> p, bool ceil_mode) {
  check_pool(input, k, s, p, "max_pool2d");
  if (is_reduced_float(input.dtype()))  // exact: the maximum of widened values is one of them
    return max_pool2d(input.to(kFloat32), k, s, p, ceil_mode).to(input.dtype());
  Tensor x = input.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = pooled_size(H, k[0], s[0], p[0], ceil_mode);
  const int64_t Wo = pooled_size(W, k[1], s[1], p[1], ceil_mode);
  WEFT_CHECK(Ho > 0 && Wo > 0, "max_pool2d: output size is empty for input ", x.str());
#ifdef WEFT_WITH_CUDA
  if (x.device().is_cuda()) {
    auto [y, ix] = cuda::nn::max_pool2d(x, Ho, Wo, k[0], k[1], s[0], s[1], p[0], p[1]);
    Shape in_shape = x.sizes();
    autograd::record("MaxPool2dBackward", {&input}, y, [ix, in_shape](std::vector<Tensor>& g) {
      return std::vector<Tensor>{cuda::nn::max_pool2d_backward(g[0], ix, in_shape)};
    });
    return y;
  }
#endif
  Tensor out = make_empty({N, C, Ho, Wo}, kFloat32, x.device());
  Tensor idx = make_empty({N, C, Ho, Wo}, kInt64, x.device());
  const float* px = x.data_ptr<float>();
  float* po = out.data_ptr<float>();
  int64_t* pi = idx.data_ptr<int64_t>();
  const int64_t kh = k[0], kw = k[1], sh = s[0], sw = s[1], ph = p[0], pw = p[1];
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
                                // NaN propagates as in PyTorch: a NaN is always taken. Bitwise |
                                // keeps it branch-free so the loop vectorises.
                                const bool take = (v > cur) | (v != v);
                                obr[ow] = take ? v : cur;
                                ibr[ow] = take ? base + ow * sw : ibr[ow];
                              }
                            }
                        }
                      }
                    });
  Shape in_shape = x.sizes();
  autograd::record("MaxPool2dBackward", {&input}, out, [idx, in_shape](std::vector<Tensor>& g) {
    Tensor dy = g[0].contiguous();
    Tensor dx = zeros(in_shape);
    const int64_t plane_in = in_shape[2] * in_shape[3], plane_out = dy.size(2) * dy.size(3);
    const float* pd = dy.data_ptr<float>();
    const int64_t* pi = idx.data_ptr<int64_t>();
    float* px = dx.data_ptr<float>();
    for (int64_t nc = 0; nc < in_shape[0] * in_shape[1]; ++nc)
      for (int64_t o = 0; o < plane_out; ++o)
        px[nc * plane_in + pi[nc * plane_out + o]] += pd[nc * plane_out + o];
    return std::vector<Tensor>{dx};
  });
  return out;
}

namespace {
// Window bounds of every output cell and the divisor of each; shared by forward and backward.
struct AvgWindows {
  std::vector<int64_t> h0, h1, w0, w1;
  std::vector<double> div;  // [Ho * Wo]
};

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

Tensor avg_pool_common(const Tensor& input, AvgWindows win, int64_t Ho, int64_t Wo,
                       const char* name) {
  if (is_reduced_float(input.dtype()))
    return avg_pool_common(input.to(kFloat32), std::move(win), Ho, Wo, name).to(input.dtype());
  Tensor x = input.contiguous();
  Shape in_shape = x.sizes();
#ifdef WEFT_WITH_CUDA
  if (x.device().is_cuda()) {
    // The windows travel to the device as one int64 tensor: h0, h1, w0, w1, divisors.
    std::vector<int64_t> packed;
    for (const auto* v : {&win.h0, &win.h1, &win.w0, &win.w1})
      packed.insert(packed.end(), v->begin(), v->end());
    for (double d : win.div) packed.push_back((int64_t)d);
    Tensor wt = tensor(packed, {(int64_t)packed.size()}).to(x.device());
    Tensor y = cuda::nn::avg_pool2d(x, wt, Ho, Wo);
    autograd::record(name, {&input}, y, [wt, in_shape](std::vector<Tensor>& g) {
      return std::vector<Tensor>{cuda::nn::avg_pool2d_backward(g[0], wt, in_shape)};
    });
    return y;
  }
#endif
  Tensor out = avg_pool_apply(x, win, Ho, Wo);
  autograd::record(name, {&input}, out, [win, in_shape](std::vector<Tensor>& g) {
    return std::vector<Tensor>{avg_pool_backward(g[0], win, in_shape)};
  });
  return out;
}
}  // namespace

Tensor avg_pool2d(const Tensor& input, std::array<int64_t, 2> k, std::array<int64_t, 2> s,
                  std::array<int64_t, 2> p, bool ceil_mode, bool count_include_pad) {
  check_pool(input, k, s, p, "avg_pool2d");
  const int64_t H = input.size(2), W = input.size(3);
  const int64_t Ho = pooled_size(H, k[0], s[0], p[0], ceil_mode);
  const int64_t Wo = pooled_size(W, k[1], s[1], p[1], ceil_mode);
  WEFT_CHECK(Ho > 0 && Wo > 0, "avg_pool2d: output size is empty for input ", input.str());
  AvgWindows win;
  std::vector<int64_t> hp0(Ho), hp1(Ho), wp0(Wo), wp1(Wo);  // padded extents
  for (int64_t o = 0; o < Ho; ++o) {
    int64_t a = o * s[0] - p[0], b = std::min(a + k[0], H + p[0]);
    hp0[o] = a;
    hp1[o] = b;
    win.h0.push_back(std::max<int64_t>(a, 0));
    win.h1.push_back(std::min(b, H));
  }
  for (int64_t o = 0; o < Wo; ++o) {
    int64_t a = o * s[1] - p[1], b = std::min(a + k[1], W + p[1]);
    wp0[o] = a;
    wp1[o] = b;
    win.w0.push_back(std::max<int64_t>(a, 0));
    win.w1.push_back(std::min(b, W));
  }
  for (int64_t oh = 0; oh < Ho; ++oh)
    for (int64_t ow = 0; ow < Wo; ++ow)
      win.div.push_back(count_include_pad
                            ? (double)((hp1[oh] - hp0[oh]) * (wp1[ow] - wp0[ow]))
                            : (double)((win.h1[oh] - win.h0[oh]) * (win.w1[ow] - win.w0[ow])));
  return avg_pool_common(input, std::move(win), Ho, Wo, "AvgPool2dBackward");
}

Tensor adaptive_avg_pool2d(const Tensor& input, std::array<int64_t, 2> os) {
  check_pool(input, {1, 1}, {1, 1}, {0, 0}, "adaptive_avg_pool2d");
  WEFT_CHECK(os[0] > 0 && os[1] > 0, "adaptive_avg_pool2d: output size must be positive");
  const int64_t H = input.size(2), W = input.size(3);
  AvgWindows win;
  for (int64_t o = 0; o < os[0]; ++o) {
    win.h0.push_back(o * H / os[0]);
    win.h1.push_back(((o + 1) * H + os[0] - 1) / os[0]);
  }
  for (int64_t o = 0; o < os[1]; ++o) {
    win.w0.push_back(o * W / os[1]);
    win.w1.push_back(((o + 1) * W + os[1] - 1) / os[1]);
  }
  for (int64_t oh = 0; oh < os[0]; ++oh)
    for (int64_t ow = 0; ow < os[1]; ++ow)
      win.div.push_back((double)((win.h1[oh] - win.h0[oh]) * (win.w1[ow] - win.w0[ow])));
  return avg_pool_common(input, std::move(win), os[0], os[1], "AdaptiveAvgPool2dBackward");
}

}  // namespace weft::nn::functional
