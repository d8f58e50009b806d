// The kernels of the elementwise ops (src/ops/elementwise.cpp), by operation: unary ops with
// their gradients, broadcasting binary ops, and the in-place forms (Note [Device dispatch] in
// ops/dispatch.h). Guarantees: every device computes each op's float formula in the same float
// and double steps, 16-bit floats in float32 with the result rounded once.
#pragma once

#include "ops/dispatch.h"
#include "weft/tensor.h"

namespace weft::ops {

// The scalars s0, s1 of a unary op are its parameters: Pow's exponent; Clamp's lo and hi; the
// scalar of AddScalar, MulScalar, DivScalar, RSub (s0 - x) and RDiv (s0 / x).
enum class UnaryOp {
  Neg,
  Exp,
  Log,
  Sqrt,
  Abs,
  Pow,
  Relu,
  Sigmoid,
  Tanh,
  Clamp,
  AddScalar,
  MulScalar,
  DivScalar,
  RSub,
  RDiv,
};
// Add computes a + alpha*b; Eq gives int64 0/1.
enum class BinaryOp { Add, Mul, Div, Eq };

// y = op(x) for a float32 x, or a 16-bit one computed in float32 and rounded once.
using UnaryFn = Tensor (*)(UnaryOp op, const Tensor& x, double s0, double s1);
WEFT_DECLARE_DISPATCH(UnaryFn, unary_stub);
// The op's gradient g * dy/dx from x (the input) and y (the output), in x's shape and dtype.
using UnaryBackwardFn = Tensor (*)(UnaryOp op, const Tensor& g, const Tensor& x, const Tensor& y,
                                   double s0, double s1);
WEFT_DECLARE_DISPATCH(UnaryBackwardFn, unary_backward_stub);
// In place on a float32 t: t + s (AddScalar) or t * s (MulScalar), in float.
using ScalarInplaceFn = void (*)(UnaryOp op, const Tensor& t, double s);
WEFT_DECLARE_DISPATCH(ScalarInplaceFn, scalar_inplace_stub);

// Broadcasting a op b, a and b of one dtype: float32 or int64 (Div: float32 only), or a 16-bit
// one where binary_reduced_native_stub says the device takes it.
using BinaryFn = Tensor (*)(BinaryOp op, const Tensor& a, const Tensor& b, double alpha);
WEFT_DECLARE_DISPATCH(BinaryFn, binary_stub);
// In place on float32 tensors: self = self + alpha*other (Add) or self * other (Mul), other
// broadcast to self.
using BinaryInplaceFn = void (*)(BinaryOp op, const Tensor& self, const Tensor& other,
                                 double alpha);
WEFT_DECLARE_DISPATCH(BinaryInplaceFn, binary_inplace_stub);
// Capability: whether binary_stub computes `op` on a and b (16-bit floats of one dtype) as they
// are. Where not, the op runs on float32 copies whose casts carry the gradients.
using BinaryReducedNativeFn = bool (*)(BinaryOp op, const Tensor& a, const Tensor& b);
WEFT_DECLARE_DISPATCH(BinaryReducedNativeFn, binary_reduced_native_stub);

}  // namespace weft::ops
