// The kernels of the losses with their own backward: NLL (cross-entropy's second half) and
// mean-squared error's fused form (src/nn/functional/loss.cpp; Note [Device dispatch] in
// ops/dispatch.h). Guarantees: float32 losses; reductions over samples accumulate in double.
#pragma once

#include <cstdint>

#include "ops/dispatch.h"
#include "weft/tensor.h"

namespace weft::ops {

enum class LossReduction { None, Mean, Sum };

// NLL of log_probs [N, C] (float32) at the contiguous int64 targets [N], whose class indices the
// op has checked on the host: -log_probs[i, target[i]] per sample (0 where the target is
// ignore_index), as [N] (None) or reduced to a 0-dim sum (Sum) or mean over the `count` targets
// not ignored (Mean; NaN when there are none).
using NllLossFn = Tensor (*)(const Tensor& log_probs, const Tensor& target, int64_t ignore_index,
                             LossReduction r, int64_t count);
WEFT_DECLARE_DISPATCH(NllLossFn, nll_loss_stub);
// Its gradient [N, C]: -g_i at (i, target[i]), g per sample (None) or one value (Sum; Mean
// divides it by count), 0 elsewhere.
using NllLossBackwardFn = Tensor (*)(const Tensor& g, const Tensor& target, int64_t C,
                                     int64_t ignore_index, LossReduction r, int64_t count);
WEFT_DECLARE_DISPATCH(NllLossBackwardFn, nll_loss_backward_stub);

// mse_loss fused into one pass and one backward node (the loss of overhead-bound steps), for
// contiguous float32 x and y of one shape: the sum of (x - y)^2 in double, and the gradient
// k * (x - y). Devices without these kernels (has_kernel) compose mse_loss from other ops.
using MseLossFn = double (*)(const Tensor& x, const Tensor& y);
WEFT_DECLARE_DISPATCH(MseLossFn, mse_loss_stub);
using MseLossBackwardFn = Tensor (*)(const Tensor& x, const Tensor& y, float k);
WEFT_DECLARE_DISPATCH(MseLossBackwardFn, mse_loss_backward_stub);

}  // namespace weft::ops
