// The kernels behind Tensor::copy_ and Tensor::fill_ (Note [Device dispatch] in
// docs/ARCHITECTURE.md). Guarantees: copy_stub converts between any dtypes; fill_stub writes
// `value` converted to the tensor's dtype (16-bit floats through float, rounding to nearest even)
// into every element.
#pragma once

#include "ops/dispatch.h"
#include "weft/tensor.h"

namespace weft::ops {

// dst = src, src already expanded to dst's shape. Between two devices the kernel is the non-CPU
// side's (a host<->CUDA copy runs on the CUDA side); non_blocking as Tensor::copy_ says.
using CopyFn = void (*)(const Tensor& dst, const Tensor& src, bool non_blocking);
WEFT_DECLARE_DISPATCH(CopyFn, copy_stub);

using FillFn = void (*)(const Tensor& t, double value);
WEFT_DECLARE_DISPATCH(FillFn, fill_stub);

}  // namespace weft::ops
