// CUDA kernels of the elementwise ops (ops/stubs/elementwise.h): unary ops and their gradients
// on float32, bf16 and fp16, broadcasting binary ops on float32/int64/bf16/fp16, and the float32
// in-place forms. Each functor computes exactly what the CPU kernel's functor in
// src/ops/cpu/elementwise.cpp computes (same float/double steps), so CPU and CUDA agree to
// rounding of the device's math functions. 16-bit operands are loaded as float, and each result
// is rounded once (InFloat): the CPU's widened computation in one pass.
#include <cmath>

#include "ops/cuda/dispatch.cuh"
#include "ops/cuda/loops.cuh"
#include "ops/stubs/elementwise.h"
#include "weft/ops.h"

namespace weft::cuda {

namespace {

using ops::BinaryOp;
using ops::UnaryOp;

using detail::launch_elementwise;

// A float functor over T storage: operands widened to float, the result rounded to T once.
template <typename T, typename Op>
struct InFloat {
  Op op;
  template <typename... X>
  __device__ T operator()(X... x) const {
    return detail::convert<T>(op(detail::to_float(x)...));
  }
};

// Calls f.template operator()<T>() with T the device type of a float32, bf16 or fp16 `dtype`.
template <typename F>
void dispatch_float(DType dtype, const char* what, F&& f) {
  WEFT_CHECK(dtype == kFloat32 || is_reduced_float(dtype), what,
             ": expected a float32, bf16 or fp16 tensor, got ", dtype);
  detail::dispatch_dtype(dtype, [&]<typename T>() {
    if constexpr (!std::is_same_v<T, int64_t>) f.template operator()<T>();
  });
}

template <UnaryOp OP>
struct UnaryF {
  double s0, s1;
  __device__ float operator()(float x) const {
    if constexpr (OP == UnaryOp::Neg) return -x;
    if constexpr (OP == UnaryOp::Exp) return expf(x);
    if constexpr (OP == UnaryOp::Log) return logf(x);
    if constexpr (OP == UnaryOp::Sqrt) return sqrtf(x);
    if constexpr (OP == UnaryOp::Abs) return fabsf(x);
    if constexpr (OP == UnaryOp::Pow) return (float)pow((double)x, s0);
    if constexpr (OP == UnaryOp::Relu) return x < 0 ? 0.0f : x;  // NaN and -0 pass (PyTorch)
    if constexpr (OP == UnaryOp::Sigmoid) return 1.0f / (1.0f + expf(-x));
    if constexpr (OP == UnaryOp::Tanh) return tanhf(x);
    if constexpr (OP == UnaryOp::Clamp) {
      // std::min(std::max(x, lo), hi): NaN stays NaN.
      const float lo = (float)s0, hi = (float)s1;
      const float m = x < lo ? lo : x;
      return hi < m ? hi : m;
    }
    if constexpr (OP == UnaryOp::AddScalar) return x + (float)s0;
    if constexpr (OP == UnaryOp::MulScalar) return x * (float)s0;
    if constexpr (OP == UnaryOp::DivScalar) return x / (float)s0;
    if constexpr (OP == UnaryOp::RSub) return (float)s0 - x;
    if constexpr (OP == UnaryOp::RDiv) return (float)s0 / x;
    return x;
  }
};

// dL/dx = f(g, x, y) for y = op(x).
template <UnaryOp OP>
struct UnaryBackF {
  double s0, s1;
  __device__ float operator()(float g, float x, float y) const {
    if constexpr (OP == UnaryOp::Neg || OP == UnaryOp::RSub) return -g;
    if constexpr (OP == UnaryOp::Exp) return g * y;
    if constexpr (OP == UnaryOp::Log) return g / x;
    if constexpr (OP == UnaryOp::Sqrt) return g / (2.0f * y);
    if constexpr (OP == UnaryOp::Abs) return x > 0 ? g : (x < 0 ? -g : 0.0f);
    if constexpr (OP == UnaryOp::Pow)
      return s0 == 0 ? 0.0f : (float)(g * s0 * pow((double)x, s0 - 1));
    if constexpr (OP == UnaryOp::Relu) return y <= 0 ? 0.0f : g;
    if constexpr (OP == UnaryOp::Sigmoid) return g * y * (1.0f - y);
    if constexpr (OP == UnaryOp::Tanh) return g * (1.0f - y * y);
    if constexpr (OP == UnaryOp::Clamp) return x >= (float)s0 && x <= (float)s1 ? g : 0.0f;
    if constexpr (OP == UnaryOp::AddScalar) return g;
    if constexpr (OP == UnaryOp::MulScalar) return g * (float)s0;
    if constexpr (OP == UnaryOp::DivScalar) return g / (float)s0;
    if constexpr (OP == UnaryOp::RDiv) return -g * y / x;
    return g;
  }
};

template <typename F>
void dispatch_unary(UnaryOp op, F&& f) {
  switch (op) {
#define WEFT_UNARY_CASE(name)               \
  case UnaryOp::name:                       \
    f.template operator()<UnaryOp::name>(); \
    return;
    WEFT_UNARY_CASE(Neg)
    WEFT_UNARY_CASE(Exp)
    WEFT_UNARY_CASE(Log)
    WEFT_UNARY_CASE(Sqrt)
    WEFT_UNARY_CASE(Abs)
    WEFT_UNARY_CASE(Pow)
    WEFT_UNARY_CASE(Relu)
    WEFT_UNARY_CASE(Sigmoid)
    WEFT_UNARY_CASE(Tanh)
    WEFT_UNARY_CASE(Clamp)
    WEFT_UNARY_CASE(AddScalar)
    WEFT_UNARY_CASE(MulScalar)
    WEFT_UNARY_CASE(DivScalar)
    WEFT_UNARY_CASE(RSub)
    WEFT_UNARY_CASE(RDiv)
#undef WEFT_UNARY_CASE
  }
}

void check_float_cuda(const Tensor& t, const char* what) {
  WEFT_CHECK(t.dtype() == kFloat32, what, ": expected a float32 tensor, got ", t.str());
  WEFT_CHECK(t.device().is_cuda(), what, ": expected a CUDA tensor, got one on ", t.device());
}

template <typename T>
struct AddF {
  __device__ T operator()(T x, T y) const { return x + y; }
};
// a + alpha*b as the CPU's `x + (decltype(x))(alpha * y)`: the product in double.
template <typename T>
struct AddAlphaF {
  double alpha;
  __device__ T operator()(T x, T y) const { return x + (T)(alpha * y); }
};
template <typename T>
struct MulF {
  __device__ T operator()(T x, T y) const { return x * y; }
};
struct DivF {
  __device__ float operator()(float x, float y) const { return x / y; }
};
template <typename T>
struct EqF {
  __device__ int64_t operator()(T x, T y) const { return x == y; }
};
// In-place add_ as the CPU's `x + a * y` with a float alpha.
struct AddAlphaFloatF {
  float a;
  __device__ float operator()(float x, float y) const { return x + a * y; }
};

Tensor unary(UnaryOp op, const Tensor& x, double s0, double s1) {
  WEFT_CHECK(x.device().is_cuda(), "unary op: expected a CUDA tensor, got one on ", x.device());
  Tensor out = make_empty(x.sizes(), x.dtype(), x.device());
  dispatch_float(x.dtype(), "unary op", [&]<typename T>() {
    dispatch_unary(op, [&]<UnaryOp OP>() {
      launch_elementwise<T, T>(out, InFloat<T, UnaryF<OP>>{{s0, s1}}, {x});
    });
  });
  return out;
}

Tensor unary_backward(UnaryOp op, const Tensor& g, const Tensor& x, const Tensor& y, double s0,
                      double s1) {
  WEFT_CHECK(x.device().is_cuda() && g.device() == x.device() && y.device() == x.device(),
             "unary op backward: expected CUDA tensors on one device");
  WEFT_CHECK(y.dtype() == x.dtype(), "unary op backward: input ", x.str(), " and output ", y.str(),
             " differ in dtype");
  Tensor out = make_empty(x.sizes(), x.dtype(), x.device());
  const Tensor gt = g.dtype() == x.dtype() ? g : g.to(x.dtype());
  const Tensor ge = gt.sizes() == x.sizes() ? gt : gt.detach().expand(x.sizes());
  dispatch_float(x.dtype(), "unary op backward", [&]<typename T>() {
    dispatch_unary(op, [&]<UnaryOp OP>() {
      launch_elementwise<T, T, T, T>(out, InFloat<T, UnaryBackF<OP>>{{s0, s1}}, {ge, x, y});
    });
  });
  return out;
}

void scalar_(UnaryOp op, const Tensor& t, double s) {
  check_float_cuda(t, "in-place scalar op");
  if (op == UnaryOp::AddScalar)
    launch_elementwise<float, float>(t, UnaryF<UnaryOp::AddScalar>{s, 0}, {t});
  else if (op == UnaryOp::MulScalar)
    launch_elementwise<float, float>(t, UnaryF<UnaryOp::MulScalar>{s, 0}, {t});
  else
    WEFT_ERROR("cuda::scalar_: unsupported op");
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b, double alpha) {
  WEFT_CHECK(a.device() == b.device() && a.device().is_cuda(), "binary op: tensors on ", a.device(),
             " and ", b.device());
  WEFT_CHECK(a.dtype() == b.dtype(), "binary op: operands of one dtype expected, got ", a.dtype(),
             " and ", b.dtype());
  const Shape shape = a.sizes() == b.sizes() ? a.sizes() : broadcast_shapes(a.sizes(), b.sizes());
  const Tensor ea = a.sizes() == shape ? a : a.detach().expand(shape);
  const Tensor eb = b.sizes() == shape ? b : b.detach().expand(shape);
  Tensor out = make_empty(shape, op == BinaryOp::Eq ? kInt64 : a.dtype(), a.device());
  if (is_reduced_float(a.dtype())) {  // float math on widened loads, rounded once
    WEFT_CHECK(op != BinaryOp::Eq, "binary op: eq on 16-bit floats compares them as float32");
    dispatch_float(a.dtype(), "binary op", [&]<typename T>() {
      if (op == BinaryOp::Add && alpha == 1.0)
        launch_elementwise<T, T, T>(out, InFloat<T, AddF<float>>{}, {ea, eb});
      else if (op == BinaryOp::Add)
        launch_elementwise<T, T, T>(out, InFloat<T, AddAlphaF<float>>{{alpha}}, {ea, eb});
      else if (op == BinaryOp::Mul)
        launch_elementwise<T, T, T>(out, InFloat<T, MulF<float>>{}, {ea, eb});
      else
        launch_elementwise<T, T, T>(out, InFloat<T, DivF>{}, {ea, eb});
    });
    return out;
  }
  WEFT_CHECK(a.dtype() == kFloat32 || a.dtype() == kInt64, "binary op: unsupported dtype ",
             a.dtype());
  auto run = [&]<typename T>() {
    switch (op) {
      case BinaryOp::Add:
        if (alpha == 1.0)
          launch_elementwise<T, T, T>(out, AddF<T>{}, {ea, eb});
        else
          launch_elementwise<T, T, T>(out, AddAlphaF<T>{alpha}, {ea, eb});
        return;
      case BinaryOp::Mul:
        launch_elementwise<T, T, T>(out, MulF<T>{}, {ea, eb});
        return;
      case BinaryOp::Div:
        if constexpr (std::is_same_v<T, float>)
          launch_elementwise<float, float, float>(out, DivF{}, {ea, eb});
        else
          WEFT_ERROR("div: int64 operands are divided as float32; convert them first");
        return;
      case BinaryOp::Eq:
        launch_elementwise<int64_t, T, T>(out, EqF<T>{}, {ea, eb});
        return;
    }
  };
  if (a.dtype() == kFloat32)
    run.template operator()<float>();
  else
    run.template operator()<int64_t>();
  return out;
}

void binary_(BinaryOp op, const Tensor& self, const Tensor& other, double alpha) {
  check_float_cuda(self, "in-place op");
  check_float_cuda(other, "in-place op");
  WEFT_CHECK(self.device() == other.device(), "in-place op: tensors on ", self.device(), " and ",
             other.device());
  const Tensor o = other.sizes() == self.sizes() ? other : other.detach().expand(self.sizes());
  if (op == BinaryOp::Add && alpha == 1.0)
    launch_elementwise<float, float, float>(self, AddF<float>{}, {self, o});
  else if (op == BinaryOp::Add)
    launch_elementwise<float, float, float>(self, AddAlphaFloatF{(float)alpha}, {self, o});
  else if (op == BinaryOp::Mul)
    launch_elementwise<float, float, float>(self, MulF<float>{}, {self, o});
  else
    WEFT_ERROR("cuda::binary_: unsupported op");
}

// Any two operands of one 16-bit dtype, as they are (eq compares float32 copies).
bool binary_reduced_native(BinaryOp op, const Tensor&, const Tensor&) { return op != BinaryOp::Eq; }

}  // namespace

WEFT_REGISTER_DISPATCH(ops::unary_stub, CUDA, &unary);
WEFT_REGISTER_DISPATCH(ops::unary_backward_stub, CUDA, &unary_backward);
WEFT_REGISTER_DISPATCH(ops::scalar_inplace_stub, CUDA, &scalar_);
WEFT_REGISTER_DISPATCH(ops::binary_stub, CUDA, &binary);
WEFT_REGISTER_DISPATCH(ops::binary_inplace_stub, CUDA, &binary_);
WEFT_REGISTER_DISPATCH(ops::binary_reduced_native_stub, CUDA, &binary_reduced_native);

}  // namespace weft::cuda
