// The kernels of conv2d (src/nn/functional/conv.cpp; Note [Device dispatch] in
// docs/ARCHITECTURE.md). Guarantees: float32 convolutions as PyTorch's default math; 16-bit ones,
// where a device takes them, accumulate in float32 and round each result once.
#pragma once

#include <cstdint>

#include "ops/dispatch.h"
#include "weft/tensor.h"

namespace weft::ops {

struct ConvParams {
  int64_t sh, sw, ph, pw, dh, dw, groups;
};

// y = conv2d(x, w) + b for contiguous x [N, C, H, W] and w [K, C/groups, kh, kw] of one float
// dtype on one device, b [K] of it or undefined; the op has checked the shapes. Undefined where
// the device has no kernel for the dtype or shape: the op then runs the float32 convolution on
// widened copies and rounds its result once.
using Conv2dFn = Tensor (*)(const Tensor& x, const Tensor& w, const Tensor& b, const ConvParams& p);
WEFT_DECLARE_DISPATCH(Conv2dFn, conv2d_stub);

// The gradients of conv2d_stub's convolution from dy, the gradient of its output (for inputs
// whose forward the kernel took), in x's dtype. Any of dx / dw / db may be skipped (want_*
// false): it comes back undefined.
struct ConvGrads {
  Tensor dx, dw, db;
};
using Conv2dBackwardFn = ConvGrads (*)(const Tensor& x, const Tensor& w, const Tensor& dy,
                                       const ConvParams& p, bool want_dx, bool want_dw,
                                       bool want_db);
WEFT_DECLARE_DISPATCH(Conv2dBackwardFn, conv2d_backward_stub);

}  // namespace weft::ops
