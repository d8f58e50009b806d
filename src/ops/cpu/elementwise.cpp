// CPU kernels of the elementwise ops (ops/stubs/elementwise.h): float32 loops (int64 for +, *
// and eq) over contiguous, scalar-broadcast or strided operands, split across threads. 16-bit
// floats of one shape, contiguous, are computed in one pass (reduced_map); others through the
// float32 loops on widened copies, the result rounded once either way.
#include "ops/stubs/elementwise.h"

#include <cmath>

#include "ops/cpu/dtype_convert.h"
#include "ops/cpu/loops.h"
#include "ops/cpu/parallel.h"
#include "weft/autograd/graph.h"
#include "weft/ops.h"

namespace weft::cpu {

namespace {

using ops::BinaryOp;
using ops::UnaryOp;

// out[i] = f(a[i], b[i]) over the broadcast shape, no autograd; T is the inputs' element type,
// O the output's (float or int64_t: eq on float inputs gives int64).
template <typename T, typename O, typename F>
Tensor binary_loop(const Tensor& a, const Tensor& b, F f) {
  Shape shape = a.sizes() == b.sizes() ? a.sizes() : broadcast_shapes(a.sizes(), b.sizes());
  Tensor out = make_empty(shape, std::is_same_v<O, float> ? kFloat32 : kInt64, a.device());
  O* o = out.data_ptr<O>();
  const T* pa = static_cast<const T*>(a.impl()->storage->data);
  const T* pb = static_cast<const T*>(b.impl()->storage->data);
  const int64_t n = out.numel();
  if (a.sizes() == shape && b.sizes() == shape && a.is_contiguous() && b.is_contiguous()) {
    const T* x = pa + a.storage_offset();
    const T* y = pb + b.storage_offset();
    cpu::parallel_for(0, n, cpu::kGrainSize, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) o[i] = (O)f(x[i], y[i]);
    });
    return out;
  }
  if (b.numel() == 1 && a.sizes() == shape && a.is_contiguous()) {
    const T* x = pa + a.storage_offset();
    const T y = pb[b.storage_offset()];
    cpu::parallel_for(0, n, cpu::kGrainSize, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) o[i] = (O)f(x[i], y);
    });
    return out;
  }
  Tensor ea = a.sizes() == shape ? a : a.detach().expand(shape);
  Tensor eb = b.sizes() == shape ? b : b.detach().expand(shape);
  cpu::for_each_run<3>(shape, {&out.strides(), &ea.strides(), &eb.strides()},
                       {0, ea.storage_offset(), eb.storage_offset()},
                       [&](std::array<int64_t, 3> off, int64_t m, std::array<int64_t, 3> st) {
                         for (int64_t i = 0; i < m; ++i)
                           o[off[0] + i * st[0]] =
                               (O)f(pa[off[1] + i * st[1]], pb[off[2] + i * st[2]]);
                       });
  return out;
}
template <typename T, typename F>
Tensor binary_kernel(const Tensor& a, const Tensor& b, DType out_dtype, F f) {
  constexpr DType in = std::is_same_v<T, float> ? kFloat32 : kInt64;
  WEFT_CHECK(a.dtype() == in && b.dtype() == in, "elementwise kernel for ", in, " given ", a.str(),
             " and ", b.str());
  if (out_dtype == kInt64) return binary_loop<T, int64_t>(a, b, f);
  WEFT_CHECK(out_dtype == kFloat32, "elementwise kernel: unsupported output dtype ", out_dtype);
  return binary_loop<T, float>(a, b, f);
}

template <typename F>
Tensor unary_kernel(const Tensor& a, F f) {
  WEFT_CHECK(a.dtype() == kFloat32, "expected a float32 tensor, got ", a.str());
  Tensor out = make_empty(a.sizes(), kFloat32, a.device());
  float* o = out.data_ptr<float>();
  const int64_t n = out.numel();
  if (a.is_contiguous()) {
    const float* x = a.data_ptr<float>();
    cpu::parallel_for(0, n, cpu::kGrainSize, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) o[i] = f(x[i]);
    });
    return out;
  }
  const float* pa = static_cast<const float*>(a.impl()->storage->data);
  cpu::for_each_run<2>(a.sizes(), {&out.strides(), &a.strides()}, {0, a.storage_offset()},
                       [&](std::array<int64_t, 2> off, int64_t m, std::array<int64_t, 2> st) {
                         for (int64_t i = 0; i < m; ++i)
                           o[off[0] + i * st[0]] = f(pa[off[1] + i * st[1]]);
                       });
  return out;
}

// out[i] = round(f(widen(in[0][i]), widen(in[1][i]), ...)) over contiguous 16-bit tensors of
// one dtype and shape: the result of running f on widened copies and rounding the output,
// without the copies. Blocks of kBlock values are widened into L1-resident buffers, so that
// the conversions and f each run as a loop the compiler vectorises.
template <size_t N, typename F>
Tensor reduced_map(const std::array<const Tensor*, N>& in, F f) {
  constexpr int64_t kBlock = 512;
  const Tensor& a = *in[0];
  Tensor out = make_empty(a.sizes(), a.dtype(), a.device());
  const int64_t n = out.numel();
  cpu::dispatch_half(a.dtype(), [&]<typename T>() {
    std::array<const T*, N> p;
    for (size_t k = 0; k < N; ++k) p[k] = static_cast<const T*>(in[k]->raw_data());
    T* o = static_cast<T*>(out.raw_data());
    cpu::parallel_for(0, n, cpu::kGrainSize, [&](int64_t s, int64_t e) {
      float x[N][kBlock], y[kBlock];
      for (int64_t i0 = s; i0 < e; i0 += kBlock) {
        const int64_t m = std::min(kBlock, e - i0);
        for (size_t k = 0; k < N; ++k) cpu::widen(p[k] + i0, m, x[k]);
        for (int64_t i = 0; i < m; ++i) {
          if constexpr (N == 1)
            y[i] = f(x[0][i]);
          else if constexpr (N == 2)
            y[i] = f(x[0][i], x[1][i]);
          else
            y[i] = f(x[0][i], x[1][i], x[2][i]);
        }
        cpu::narrow(y, m, o + i0);
      }
    });
  });
  return out;
}

// Whether reduced_map takes these operands as they are.
bool reduced_mappable(std::initializer_list<const Tensor*> ts) {
  const Tensor& a = **ts.begin();
  for (const Tensor* t : ts)
    if (!t->defined() || t->dtype() != a.dtype() || t->sizes() != a.sizes() ||
        !t->is_contiguous() || !t->device().is_cpu())
      return false;
  return is_reduced_float(a.dtype());
}

// y = f(x) of each unary op, and its gradient g * dy/dx from x and y (the same formulas as the
// CUDA kernels' UnaryF / UnaryBackF in ops/cuda/elementwise.cu).
template <UnaryOp OP>
struct UnaryF {
  double s0, s1;
  float operator()(float x) const {
    if constexpr (OP == UnaryOp::Neg) return -x;
    if constexpr (OP == UnaryOp::Exp) return std::exp(x);
    if constexpr (OP == UnaryOp::Log) return std::log(x);
    if constexpr (OP == UnaryOp::Sqrt) return std::sqrt(x);
    if constexpr (OP == UnaryOp::Abs) return std::fabs(x);
    if constexpr (OP == UnaryOp::Pow) return (float)std::pow((double)x, s0);
    // PyTorch's: NaN and -0 pass through.
    if constexpr (OP == UnaryOp::Relu) return x < 0 ? 0.0f : x;
    if constexpr (OP == UnaryOp::Sigmoid) return 1.0f / (1.0f + std::exp(-x));
    if constexpr (OP == UnaryOp::Tanh) return std::tanh(x);
    if constexpr (OP == UnaryOp::Clamp) return std::min(std::max(x, (float)s0), (float)s1);
    if constexpr (OP == UnaryOp::AddScalar) return x + (float)s0;
    if constexpr (OP == UnaryOp::MulScalar) return x * (float)s0;
    if constexpr (OP == UnaryOp::DivScalar) return x / (float)s0;
    if constexpr (OP == UnaryOp::RSub) return (float)s0 - x;
    if constexpr (OP == UnaryOp::RDiv) return (float)s0 / x;
    return x;
  }
};

template <UnaryOp OP>
struct UnaryBackF {
  double s0, s1;
  float operator()(float g, float x, float y) const {
    if constexpr (OP == UnaryOp::Neg || OP == UnaryOp::RSub) return -g;
    if constexpr (OP == UnaryOp::Exp) return g * y;
    if constexpr (OP == UnaryOp::Log) return g / x;
    if constexpr (OP == UnaryOp::Sqrt) return g / (2.0f * y);
    if constexpr (OP == UnaryOp::Abs) return x > 0 ? g : (x < 0 ? -g : 0.0f);
    if constexpr (OP == UnaryOp::Pow)
      return s0 == 0 ? 0.0f : (float)(g * s0 * std::pow((double)x, s0 - 1));
    // The gradient passes where the output is not <= 0.
    if constexpr (OP == UnaryOp::Relu) return y <= 0 ? 0.0f : g;
    if constexpr (OP == UnaryOp::Sigmoid) return g * y * (1.0f - y);
    if constexpr (OP == UnaryOp::Tanh) return g * (1.0f - y * y);
    if constexpr (OP == UnaryOp::Clamp) return x >= (float)s0 && x <= (float)s1 ? g : 0.0f;
    if constexpr (OP == UnaryOp::MulScalar) return g * (float)s0;
    if constexpr (OP == UnaryOp::DivScalar) return g / (float)s0;
    if constexpr (OP == UnaryOp::RDiv) return -g * y / x;
    return g;  // AddScalar
  }
};

// Calls f.template operator()<OP>() with the runtime op as a template argument.
template <typename F>
decltype(auto) dispatch_unary(UnaryOp op, F&& f) {
  switch (op) {
#define WEFT_UNARY_CASE(name) \
  case UnaryOp::name:         \
    return f.template operator()<UnaryOp::name>();
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
  WEFT_ERROR("unary op: unknown op ", (int)op);
}

// gx = dfn(g, x, y) elementwise over float32 tensors (x the op's input, y its output).
template <typename D>
Tensor unary_grad(const Tensor& g, const Tensor& x, const Tensor& y, D dfn) {
  if (g.sizes() == x.sizes() && g.is_contiguous() && x.is_contiguous() &&
      y.is_contiguous()) {  // the usual case: one pass, no copy of the gradient first
    Tensor gx = make_empty(x.sizes(), kFloat32, x.device());
    float* po = gx.data_ptr<float>();
    const float *pg = g.data_ptr<float>(), *px = x.data_ptr<float>(), *py = y.data_ptr<float>();
    cpu::parallel_for(0, gx.numel(), cpu::kGrainSize, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) po[i] = dfn(pg[i], px[i], py[i]);
    });
    return gx;
  }
  Tensor gx = binary_kernel<float>(g, x, kFloat32, [](float gg, float) { return gg; });
  float* pg = gx.data_ptr<float>();
  Tensor xc = x.contiguous(), yc = y.contiguous();
  const float* px = xc.data_ptr<float>();
  const float* py = yc.data_ptr<float>();
  cpu::parallel_for(0, gx.numel(), cpu::kGrainSize, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) pg[i] = dfn(pg[i], px[i], py[i]);
  });
  return gx;
}

// 16-bit inputs: f runs in float32 and each result is rounded once, in one pass where the input
// is contiguous, else on a float32 copy.
Tensor unary(UnaryOp op, const Tensor& a, double s0, double s1) {
  return dispatch_unary(op, [&]<UnaryOp OP>() {
    const UnaryF<OP> f{s0, s1};
    if (!is_reduced_float(a.dtype())) return unary_kernel(a, f);
    if (reduced_mappable({&a})) return reduced_map<1>({&a}, f);
    NoGradGuard ng;
    return unary_kernel(a.to(kFloat32), f).to(a.dtype());
  });
}

// 16-bit x: the backward reads the 16-bit input and the rounded output (the tensors PyTorch
// saves), computes in float32 and rounds its result once.
Tensor unary_backward(UnaryOp op, const Tensor& g, const Tensor& x, const Tensor& y, double s0,
                      double s1) {
  return dispatch_unary(op, [&]<UnaryOp OP>() {
    const UnaryBackF<OP> dfn{s0, s1};
    if (!is_reduced_float(x.dtype())) return unary_grad(g, x, y, dfn);
    if (reduced_mappable({&g, &x, &y})) return reduced_map<3>({&g, &x, &y}, dfn);
    Tensor gx = unary_grad(g.to(kFloat32), x.to(kFloat32), y.to(kFloat32), dfn);
    return gx.to(x.dtype());
  });
}

// self[i] = f(self[i], other[i]) with other broadcast to self.
template <typename F>
void inplace_binary(const Tensor& self, const Tensor& other, F f) {
  WEFT_CHECK(self.device() == other.device(),
             "in-place op: expected all tensors on the same device, got ", self.device(), " and ",
             other.device());
  WEFT_CHECK(self.dtype() == kFloat32 && other.dtype() == kFloat32,
             "in-place arithmetic needs float32 tensors, got ", self.str(), " and ", other.str());
  Tensor o = other.sizes() == self.sizes() ? other : other.expand(self.sizes());
  float* ps = static_cast<float*>(self.impl()->storage->data);
  const float* po = static_cast<const float*>(o.impl()->storage->data);
  if (self.is_contiguous() && o.is_contiguous()) {
    float* x = ps + self.storage_offset();
    const float* y = po + o.storage_offset();
    cpu::parallel_for(0, self.numel(), cpu::kGrainSize, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) x[i] = f(x[i], y[i]);
    });
    return;
  }
  cpu::for_each_run<2>(
      self.sizes(), {&self.strides(), &o.strides()}, {self.storage_offset(), o.storage_offset()},
      [&](std::array<int64_t, 2> off, int64_t m, std::array<int64_t, 2> st) {
        for (int64_t i = 0; i < m; ++i)
          ps[off[0] + i * st[0]] = f(ps[off[0] + i * st[0]], po[off[1] + i * st[1]]);
      });
}

void scalar_inplace(UnaryOp op, const Tensor& t, double value) {
  const float v = (float)value;
  if (op == UnaryOp::AddScalar)
    inplace_binary(t, scalar_tensor(0), [v](float x, float) { return x + v; });
  else if (op == UnaryOp::MulScalar)
    inplace_binary(t, scalar_tensor(0), [v](float x, float) { return x * v; });
  else
    WEFT_ERROR("in-place scalar op: unsupported op ", (int)op);
}

// a + b (or a + alpha*b, the product in double as PyTorch's) and a * b: int64, float32, or one
// 16-bit dtype of reduced_mappable operands (binary_reduced_native).
template <typename F>
Tensor arith(const Tensor& a, const Tensor& b, const char* op, F f) {
  if (a.dtype() == kInt64) return binary_kernel<int64_t>(a, b, kInt64, f);
  if (is_reduced_float(a.dtype())) return reduced_map<2>({&a, &b}, f);
  WEFT_CHECK(a.dtype() == kFloat32, op, ": unsupported dtype ", a.dtype());
  return binary_kernel<float>(a, b, kFloat32, f);
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b, double alpha) {
  switch (op) {
    case BinaryOp::Add:
      if (alpha == 1.0) return arith(a, b, "add", [](auto x, auto y) { return x + y; });
      return arith(a, b, "add", [alpha](auto x, auto y) { return x + (decltype(x))(alpha * y); });
    case BinaryOp::Mul:
      return arith(a, b, "mul", [](auto x, auto y) { return x * y; });
    case BinaryOp::Div:
      return binary_kernel<float>(a, b, kFloat32, [](float x, float y) { return x / y; });
    case BinaryOp::Eq:
      if (a.dtype() == kInt64)
        return binary_kernel<int64_t>(a, b, kInt64, [](int64_t x, int64_t y) { return x == y; });
      return binary_kernel<float>(a, b, kInt64, [](float x, float y) { return (int64_t)(x == y); });
  }
  WEFT_ERROR("binary op: unknown op ", (int)op);
}

void binary_inplace(BinaryOp op, const Tensor& self, const Tensor& other, double alpha) {
  const float a = (float)alpha;
  if (op == BinaryOp::Add && alpha == 1.0)
    inplace_binary(self, other, [](float x, float y) { return x + y; });
  else if (op == BinaryOp::Add)
    inplace_binary(self, other, [a](float x, float y) { return x + a * y; });
  else if (op == BinaryOp::Mul)
    inplace_binary(self, other, [](float x, float y) { return x * y; });
  else
    WEFT_ERROR("in-place binary op: unsupported op ", (int)op);
}

// 16-bit add and mul in one pass where reduced_map takes the operands; division always through
// float32 copies, so that its backward rounds once.
bool binary_reduced_native(BinaryOp op, const Tensor& a, const Tensor& b) {
  return op != BinaryOp::Div && op != BinaryOp::Eq && reduced_mappable({&a, &b});
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::unary_stub, CPU, &unary);
WEFT_REGISTER_DISPATCH(ops::unary_backward_stub, CPU, &unary_backward);
WEFT_REGISTER_DISPATCH(ops::scalar_inplace_stub, CPU, &scalar_inplace);
WEFT_REGISTER_DISPATCH(ops::binary_stub, CPU, &binary);
WEFT_REGISTER_DISPATCH(ops::binary_inplace_stub, CPU, &binary_inplace);
WEFT_REGISTER_DISPATCH(ops::binary_reduced_native_stub, CPU, &binary_reduced_native);

}  // namespace weft::cpu
