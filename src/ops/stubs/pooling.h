// The kernels of 2-D max and average pooling over contiguous float32 [N, C, H, W] inputs
// (src/nn/functional/pooling.cpp; Note [Device dispatch] in docs/ARCHITECTURE.md). Guarantees: max
// takes the first maximum of a window in row-major order and any NaN; averages sum in double.
#pragma once

#include <utility>
#include <vector>

#include "ops/dispatch.h"
#include "weft/tensor.h"

namespace weft::ops {

// An Ho x Wo output of windows kh x kw at strides sh, sw over the input padded by ph, pw.
struct MaxPool2dParams {
  int64_t Ho, Wo, kh, kw, sh, sw, ph, pw;
};
// Values and each maximum's flat index in its input plane, [N, C, Ho, Wo]. x is float32; on the
// CPU also bfloat16 (values stay bf16: a maximum of bf16 values is one of them).
using MaxPool2dFn = std::pair<Tensor, Tensor> (*)(const Tensor& x, const MaxPool2dParams& p);
WEFT_DECLARE_DISPATCH(MaxPool2dFn, max_pool2d_stub);
// dx of in_shape, in dy's dtype: dy scattered (added, in float32) to the idx positions of each
// plane, for the windows of p.
using MaxPool2dBackwardFn = Tensor (*)(const Tensor& dy, const Tensor& idx, const Shape& in_shape,
                                       const MaxPool2dParams& p);
WEFT_DECLARE_DISPATCH(MaxPool2dBackwardFn, max_pool2d_backward_stub);

// Average pooling over explicit windows: output cell (oh, ow) averages rows [h0[oh], h1[oh]) and
// columns [w0[ow], w1[ow]) of its plane, divided by div[oh * Wo + ow]. A device whose kernels
// read the windows from its memory keeps its copy in `device_copy`, made by the forward and
// reused by the backward.
struct AvgPoolWindows {
  std::vector<int64_t> h0, h1, w0, w1;
  std::vector<double> div;  // [Ho * Wo]
  mutable Tensor device_copy;
};
using AvgPool2dFn = Tensor (*)(const Tensor& x, const AvgPoolWindows& win, int64_t Ho, int64_t Wo);
WEFT_DECLARE_DISPATCH(AvgPool2dFn, avg_pool2d_stub);
using AvgPool2dBackwardFn = Tensor (*)(const Tensor& dy, const AvgPoolWindows& win,
                                       const Shape& in_shape);
WEFT_DECLARE_DISPATCH(AvgPool2dBackwardFn, avg_pool2d_backward_stub);

}  // namespace weft::ops
