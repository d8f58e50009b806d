// The kernels of Conv2d -> BatchNorm (batch statistics) -> ReLU run as one
// (Note [Conv-BatchNorm-ReLU fusion] in docs/ARCHITECTURE.md;
// src/nn/functional/conv_batch_norm.cpp).
// Guarantees: where a device's kernels take a convolution (conv2d_batch_norm_takes_stub), the
// results equal conv2d_stub's, batch_norm's and relu's composed, bit for bit.
#pragma once

#include "ops/dispatch.h"
#include "ops/stubs/conv.h"
#include "weft/tensor.h"

namespace weft::ops {

// Whether the kernels run conv2d(x, w) + b fused with the batch norm after it: arguments as
// conv2d_stub's (shapes checked by the op), except that x may be channel-blocked, [N, C/B, H, W,
// B] as an output of conv2d_batch_norm_relu_elemt_stub; so may x in the two kernels below.
using ConvBatchNormTakesFn = bool (*)(const Tensor& x, const Tensor& w, const Tensor& b,
                                      const ConvParams& p);
WEFT_DECLARE_DISPATCH(ConvBatchNormTakesFn, conv2d_batch_norm_takes_stub);

// The convolution's output y, in the kernel's own layout (opaque to the caller: it only hands
// it back to the two kernels below), with its per-channel mean and biased variance, float32 [K].
struct ConvBatchNormForward {
  Tensor y, mean, var;
};
using ConvBatchNormForwardFn = ConvBatchNormForward (*)(const Tensor& x, const Tensor& w,
                                                        const Tensor& b, const ConvParams& p);
WEFT_DECLARE_DISPATCH(ConvBatchNormForwardFn, conv2d_batch_norm_stub);

// relu((y - mean) * invstd * weight + bias) as a contiguous NCHW tensor, or (`blocked`) in y's
// channel-blocked layout [N, K/B, Ho, Wo, B]; weight and bias may be undefined.
using ConvBatchNormReluElemtFn = Tensor (*)(const Tensor& y, const Tensor& mean,
                                            const Tensor& invstd, const Tensor& weight,
                                            const Tensor& bias, bool blocked);
WEFT_DECLARE_DISPATCH(ConvBatchNormReluElemtFn, conv2d_batch_norm_relu_elemt_stub);

// The backward from g = dL/d(output), in the output's layout: the ReLU's mask is recomputed
// from y, as in batch_norm_relu_backward_stub. The convolution's dx (in x's layout) / dw / db
// where wanted (db only with dw), and per channel sum(g') and sum(g' * (y - mean)) of the
// masked g'.
struct ConvBatchNormReluGrads {
  Tensor dx, dw, db, sum_dy, sum_dy_xmu;
};
using ConvBatchNormReluBackwardFn = ConvBatchNormReluGrads (*)(
    const Tensor& g, const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& mean,
    const Tensor& invstd, const Tensor& weight, const Tensor& bias, const ConvParams& p,
    int64_t count, bool want_dx, bool want_dw, bool want_db);
WEFT_DECLARE_DISPATCH(ConvBatchNormReluBackwardFn, conv2d_batch_norm_relu_backward_stub);

// t between NCHW and the channel-blocked layout: to [N, C/block, H, W, block] from NCHW, or
// (block 0) to NCHW from blocked. The same floats, moved.
using ConvBatchNormLayoutFn = Tensor (*)(const Tensor& t, int64_t block);
WEFT_DECLARE_DISPATCH(ConvBatchNormLayoutFn, conv2d_batch_norm_layout_stub);

}  // namespace weft::ops
