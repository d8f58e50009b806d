// The kernels of the reductions and softmax (src/ops/reduce.cpp; Note [Device dispatch] in
// ops/dispatch.h). Guarantees: float32 only; sums and softmax's normalisers accumulate in double;
// max takes the first of equal maxima and any NaN.
#pragma once

#include <utility>
#include <vector>

#include "ops/dispatch.h"
#include "weft/tensor.h"

namespace weft::ops {

// Sum of x over the dims where mask is true, in keepdim shape.
using SumFn = Tensor (*)(const Tensor& x, const std::vector<bool>& mask);
WEFT_DECLARE_DISPATCH(SumFn, sum_stub);
// Max along dim d of x (at least 1-D): values and int64 indices, contiguous, in x's shape with
// dim d of size 1 (or flat).
using MaxFn = std::pair<Tensor, Tensor> (*)(const Tensor& x, int64_t d);
WEFT_DECLARE_DISPATCH(MaxFn, max_stub);
// The gradient of max along d: g (values' shape) scattered to the idx positions of a zero tensor
// of x_shape, returned as in_shape (the op's input's shape: x_shape, or () for a 0-dim input).
using MaxBackwardFn = Tensor (*)(const Tensor& g, const Tensor& idx, const Shape& x_shape,
                                 int64_t d, const Shape& in_shape);
WEFT_DECLARE_DISPATCH(MaxBackwardFn, max_backward_stub);
// softmax (or log_softmax) of x (at least 1-D) along dim d, in x's shape, contiguous.
using SoftmaxFn = Tensor (*)(const Tensor& x, int64_t d, bool log);
WEFT_DECLARE_DISPATCH(SoftmaxFn, softmax_stub);

}  // namespace weft::ops
