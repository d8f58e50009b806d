// 2-D max, average and adaptive-average pooling over contiguous NCHW, with backward: the window
// geometry here, the kernels the device's (ops/stubs/pooling.h; Note [Device dispatch]).
#include "ops/stubs/pooling.h"

#include <algorithm>
#include <tuple>

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
  // Exact: the maximum of widened values is one of them. The CPU kernels take bf16 as it is,
  // which saves autocast's CNNs a widening copy of each pooled activation and its gradient.
  const bool as_is = input.dtype() == DType::BFloat16 && input.device().is_cpu();
  if (is_reduced_float(input.dtype()) && !as_is)
    return max_pool2d(input.to(kFloat32), k, s, p, ceil_mode).to(input.dtype());
  Tensor x = input.contiguous();
  const int64_t H = x.size(2), W = x.size(3);
  const int64_t Ho = pooled_size(H, k[0], s[0], p[0], ceil_mode);
  const int64_t Wo = pooled_size(W, k[1], s[1], p[1], ceil_mode);
  WEFT_CHECK(Ho > 0 && Wo > 0, "max_pool2d: output size is empty for input ", x.str());
  const ops::MaxPool2dParams params{Ho, Wo, k[0], k[1], s[0], s[1], p[0], p[1]};
  Tensor out, idx;
  std::tie(out, idx) = ops::max_pool2d_stub(x.device(), x, params);
  Shape in_shape = x.sizes();
  autograd::record("MaxPool2dBackward", {&input}, out,
                   [idx, in_shape, params](std::vector<Tensor>& g) {
                     return std::vector<Tensor>{
                         ops::max_pool2d_backward_stub(g[0].device(), g[0], idx, in_shape, params)};
                   });
  return out;
}

namespace {
using AvgWindows = ops::AvgPoolWindows;

Tensor avg_pool_common(const Tensor& input, AvgWindows win, int64_t Ho, int64_t Wo,
                       const char* name) {
  if (is_reduced_float(input.dtype()))
    return avg_pool_common(input.to(kFloat32), std::move(win), Ho, Wo, name).to(input.dtype());
  Tensor x = input.contiguous();
  Shape in_shape = x.sizes();
  Tensor out = ops::avg_pool2d_stub(x.device(), x, win, Ho, Wo);
  autograd::record(name, {&input}, out, [win = std::move(win), in_shape](std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::avg_pool2d_backward_stub(g[0].device(), g[0], win, in_shape)};
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
