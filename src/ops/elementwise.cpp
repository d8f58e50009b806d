// Broadcasting elementwise arithmetic and activations, float32 (int64 for +,-,* and eq),
// with their backward formulas. bf16/fp16 operands compute in float32 and round the result once
// (PyTorch's opmath rule): where the device's kernels take them (binary_reduced_native_stub) as
// they are, else through the float32 kernels on widened copies, whose casts carry the gradients.
// The kernels are the device's (ops/stubs/elementwise.h; Note [Device dispatch]).
#include "ops/stubs/elementwise.h"

#include <cmath>

#include "tensor/memory_overlap.h"
#include "weft/amp/autocast.h"
#include "weft/autograd/graph.h"
#include "weft/ops.h"

namespace weft {

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    WEFT_CHECK(da == db || da == 1 || db == 1, "shapes ", shape_str(a), " and ", shape_str(b),
               " cannot be broadcast together (dim ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor sum_to(const Tensor& t, const Shape& shape) {
  if (t.sizes() == shape) return t;
  int64_t lead = t.dim() - (int64_t)shape.size();
  WEFT_CHECK(lead >= 0, "sum_to: cannot reduce ", t.str(), " to ", shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < t.dim(); ++i)
    if (i < lead || (shape[i - lead] == 1 && t.size(i) != 1)) dims.push_back(i);
  Tensor r = dims.empty() ? t : t.sum(dims, true);
  return r.reshape(shape);
}

DType promote_types(DType a, DType b) {
  if (a == b) return a;
  if (a == kInt64) return b;
  if (b == kInt64) return a;
  return kFloat32;  // float32 with a 16-bit float, or bf16 with fp16
}

DType result_type(const Tensor& a, const Tensor& b) {
  // PyTorch: a 0-dim operand only decides the type when it is of a higher category (float over
  // int) than the others, so bf16 * scalar_tensor(2.f) stays bf16.
  if ((a.dim() == 0) == (b.dim() == 0)) return promote_types(a.dtype(), b.dtype());
  const DType dimmed = a.dim() == 0 ? b.dtype() : a.dtype();
  const DType zero = a.dim() == 0 ? a.dtype() : b.dtype();
  return is_floating_point(zero) && !is_floating_point(dimmed) ? zero : dimmed;
}

namespace {

using ops::BinaryOp;
using ops::UnaryOp;

// Operands that must be widened: mixed dtypes with a 16-bit float, or 16-bit floats the device's
// kernels do not take as they are for `op`.
bool widen_operands(const Tensor& a, const Tensor& b, BinaryOp op) {
  if (!is_reduced_float(a.dtype()) && !is_reduced_float(b.dtype())) return false;
  if (a.dtype() != b.dtype()) return true;
  return !ops::binary_reduced_native_stub(a.device(), op, a, b);
}

void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  WEFT_CHECK(a.defined() && b.defined(), op, ": undefined tensor argument");
  WEFT_CHECK(a.device() == b.device(), op, ": expected all tensors on the same device, got ",
             a.device(), " and ", b.device());
}

// Promotes mixed int64/float32 operands to float32, as PyTorch's type promotion does.
std::pair<Tensor, Tensor> promote(const Tensor& a, const Tensor& b, const char* op) {
  check_same_device(a, b, op);
  if (a.dtype() == b.dtype()) return {a, b};
  WEFT_CHECK((a.dtype() == kFloat32 || a.dtype() == kInt64) &&
                 (b.dtype() == kFloat32 || b.dtype() == kInt64),
             op, ": unsupported dtypes ", a.dtype(), " and ", b.dtype());
  return {a.to(kFloat32), b.to(kFloat32)};
}

Tensor arith(const Tensor& a0, const Tensor& b0, const char* op, BinaryOp bop, double alpha) {
  auto [a, b] = promote(a0, b0, op);  // one 16-bit type passes through (see widen_operands)
  return ops::binary_stub(a.device(), bop, a, b, alpha);
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b, double alpha) {
  check_same_device(a, b, "add");
  if (widen_operands(a, b, BinaryOp::Add))
    return add(a.to(kFloat32), b.to(kFloat32), alpha).to(result_type(a, b));
  Tensor out = arith(a, b, "add", BinaryOp::Add, alpha);
  Shape sa = a.sizes(), sb = b.sizes();
  autograd::record("AddBackward", {&a, &b}, out, [sa, sb, alpha](std::vector<Tensor>& g) {
    return std::vector<Tensor>{sum_to(g[0], sa), sum_to(alpha == 1.0 ? g[0] : g[0] * alpha, sb)};
  });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) { return add(a, b, -1.0); }

Tensor mul(const Tensor& a, const Tensor& b) {
  check_same_device(a, b, "mul");
  if (widen_operands(a, b, BinaryOp::Mul))
    return mul(a.to(kFloat32), b.to(kFloat32)).to(result_type(a, b));
  Tensor out = arith(a, b, "mul", BinaryOp::Mul, 1.0);
  if (autograd::any_requires_grad({&a, &b})) {
    Tensor sa = a.detach(), sb = b.detach();
    bool ga = a.requires_grad(), gb = b.requires_grad();
    autograd::record("MulBackward", {&a, &b}, out,
                     [sa, sb, ga, gb](std::vector<Tensor>& g) {
                       return std::vector<Tensor>{ga ? sum_to(g[0] * sb, sa.sizes()) : Tensor(),
                                                  gb ? sum_to(g[0] * sa, sb.sizes()) : Tensor()};
                     },
                     {ga ? sb : Tensor(), gb ? sa : Tensor()});
  }
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  check_same_device(a, b, "div");
  // The CPU's kernels take no 16-bit operands here: the backward then rounds once, as it always
  // has.
  if (widen_operands(a, b, BinaryOp::Div))
    return div(a.to(kFloat32), b.to(kFloat32)).to(result_type(a, b));
  // int64 operands divide as float32; 16-bit ones (on CUDA) as they are.
  auto [fa, fb] = is_reduced_float(a.dtype()) ? std::pair<Tensor, Tensor>{a, b}
                                              : promote(a.to(kFloat32), b.to(kFloat32), "div");
  Tensor out = ops::binary_stub(fa.device(), BinaryOp::Div, fa, fb, 1.0);
  if (autograd::any_requires_grad({&a, &b})) {
    Tensor sa = fa.detach(), sb = fb.detach();
    bool gb = b.requires_grad();
    autograd::record("DivBackward", {&a, &b}, out,
                     [sa, sb, gb](std::vector<Tensor>& g) {
                       Tensor gx = g[0] / sb;
                       return std::vector<Tensor>{
                           sum_to(gx, sa.sizes()),
                           gb ? sum_to(-(gx * sa / sb), sb.sizes()) : Tensor()};
                     },
                     {sb, gb ? sa : Tensor()});
  }
  return out;
}

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }

namespace {
// Which of x (input) and y (output) a unary op's derivative reads: only those are checked for
// in-place writes before its backward.
enum class Reads { Nothing, X, Y, XY };
// Unary op with its kernels `op` (scalars s0, s1; see ops/stubs/elementwise.h) and the backward
// gx = g * dy/dx. 16-bit inputs: the kernels compute in float32 and round each result once; the
// backward reads the 16-bit input and the rounded output, the tensors PyTorch saves.
Tensor unary_op(const Tensor& a, const char* name, Reads reads, UnaryOp op, double s0 = 0,
                double s1 = 0) {
  Tensor out = ops::unary_stub(a.device(), op, a, s0, s1);
  if (autograd::any_requires_grad({&a})) {
    Tensor x = a.detach(), y = out.detach();
    const bool rx = reads == Reads::X || reads == Reads::XY;
    const bool ry = reads == Reads::Y || reads == Reads::XY;
    autograd::record(
        name, {&a}, out,
        [x, y, op, s0, s1](std::vector<Tensor>& g) {
          return std::vector<Tensor>{ops::unary_backward_stub(x.device(), op, g[0], x, y, s0, s1)};
        },
        {rx ? x : Tensor(), ry ? y : Tensor()});
  }
  return out;
}
}  // namespace

Tensor operator+(const Tensor& a, double b) {
  return unary_op(a, "AddScalarBackward", Reads::Nothing, UnaryOp::AddScalar, b);
}
Tensor operator-(const Tensor& a, double b) { return a + (-b); }
Tensor operator*(const Tensor& a, double b) {
  return unary_op(a, "MulScalarBackward", Reads::Nothing, UnaryOp::MulScalar, b);
}
Tensor operator/(const Tensor& a, double b) {
  return unary_op(a, "DivScalarBackward", Reads::Nothing, UnaryOp::DivScalar, b);
}
Tensor operator-(double a, const Tensor& b) {
  return unary_op(b, "RsubBackward", Reads::Nothing, UnaryOp::RSub, a);
}
Tensor operator/(double a, const Tensor& b) {
  return unary_op(b, "RdivBackward", Reads::XY, UnaryOp::RDiv, a);
}

Tensor Tensor::operator-() const {
  return unary_op(*this, "NegBackward", Reads::Nothing, UnaryOp::Neg);
}
Tensor Tensor::exp() const {
  if (amp::autocast_to_float32_on_cuda(*this)) return to(kFloat32).exp();
  return unary_op(*this, "ExpBackward", Reads::Y, UnaryOp::Exp);
}
Tensor Tensor::log() const {
  if (amp::autocast_to_float32_on_cuda(*this)) return to(kFloat32).log();
  return unary_op(*this, "LogBackward", Reads::X, UnaryOp::Log);
}
Tensor Tensor::sqrt() const { return unary_op(*this, "SqrtBackward", Reads::Y, UnaryOp::Sqrt); }
Tensor Tensor::abs() const { return unary_op(*this, "AbsBackward", Reads::X, UnaryOp::Abs); }
Tensor Tensor::pow(double e) const {
  if (amp::autocast_to_float32_on_cuda(*this)) return to(kFloat32).pow(e);
  return unary_op(*this, "PowBackward", Reads::X, UnaryOp::Pow, e);
}
Tensor Tensor::relu() const { return unary_op(*this, "ReluBackward", Reads::Y, UnaryOp::Relu); }
Tensor Tensor::sigmoid() const {
  return unary_op(*this, "SigmoidBackward", Reads::Y, UnaryOp::Sigmoid);
}
Tensor Tensor::tanh() const { return unary_op(*this, "TanhBackward", Reads::Y, UnaryOp::Tanh); }
Tensor Tensor::clamp(std::optional<double> mn, std::optional<double> mx) const {
  float lo = mn ? (float)*mn : -INFINITY, hi = mx ? (float)*mx : INFINITY;
  return unary_op(*this, "ClampBackward", Reads::X, UnaryOp::Clamp, lo, hi);
}

Tensor Tensor::eq(const Tensor& other) const {
  // 16-bit floats compare exactly as float32.
  auto widen = [](const Tensor& t) { return t.dtype() == kInt64 ? t : t.to(kFloat32); };
  auto [a, b] = promote(widen(*this), widen(other), "eq");
  return ops::binary_stub(a.device(), BinaryOp::Eq, a, b, 1.0);
}

// ---------------- in-place ----------------

namespace {
// Every in-place arithmetic op starts here: refuses what autograd forbids, bumps the version.
void begin_inplace(const Tensor& t, const char* op) {
  WEFT_CHECK(!(GradMode::is_enabled() && t.requires_grad()), "in-place ", op, " on ", t.str(),
             " that requires grad; wrap it in NoGradGuard");
  t.bump_version();
}
void begin_inplace(const Tensor& t, const Tensor& other, const char* op) {
  detail::assert_no_partial_overlap(t, other, op);
  begin_inplace(t, op);
}
// A 16-bit float self is updated through a float32 copy, rounded once on the way back.
template <typename F>
Tensor& inplace_widened(Tensor& self, F f) {
  NoGradGuard ng;
  Tensor w = self.to(kFloat32);
  f(w);
  self.copy_(w);
  return self;
}
// The other operand in self's (float32) type: PyTorch lets float32 += bf16.
Tensor as_float32(const Tensor& other) {
  return is_reduced_float(other.dtype()) ? other.to(kFloat32) : other;
}
}  // namespace

Tensor& Tensor::add_(const Tensor& other0, double alpha) {
  begin_inplace(*this, other0, "add_");
  if (is_reduced_float(dtype()))
    return inplace_widened(*this, [&](Tensor& w) { w.add_(other0, alpha); });
  const Tensor other = as_float32(other0);
  check_same_device(*this, other, "add_");
  ops::binary_inplace_stub(device(), BinaryOp::Add, *this, other, alpha);
  return *this;
}

Tensor& Tensor::add_(double value) {
  begin_inplace(*this, "add_");
  if (is_reduced_float(dtype())) return inplace_widened(*this, [&](Tensor& w) { w.add_(value); });
  ops::scalar_inplace_stub(device(), UnaryOp::AddScalar, *this, value);
  return *this;
}

Tensor& Tensor::mul_(double value) {
  begin_inplace(*this, "mul_");
  if (is_reduced_float(dtype())) return inplace_widened(*this, [&](Tensor& w) { w.mul_(value); });
  ops::scalar_inplace_stub(device(), UnaryOp::MulScalar, *this, value);
  return *this;
}

Tensor& Tensor::mul_(const Tensor& other0) {
  begin_inplace(*this, other0, "mul_");
  if (is_reduced_float(dtype())) return inplace_widened(*this, [&](Tensor& w) { w.mul_(other0); });
  const Tensor other = as_float32(other0);
  check_same_device(*this, other, "mul_");
  ops::binary_inplace_stub(device(), BinaryOp::Mul, *this, other, 1.0);
  return *this;
}

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  return a.sizes() == b.sizes() && max_rel_diff(a, b, rtol, atol) <= 1.0;
}

double max_rel_diff(const Tensor& a, const Tensor& b, double rtol, double atol) {
  WEFT_CHECK(a.sizes() == b.sizes(), "max_rel_diff: shapes differ: ", a.str(), " vs ", b.str());
  auto va = a.to_vector_float(), vb = b.to_vector_float();
  double worst = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    double d = std::fabs((double)va[i] - vb[i]);
    if (std::isnan(va[i]) != std::isnan(vb[i])) return INFINITY;
    worst = std::max(worst, d / (atol + rtol * std::fabs((double)vb[i])));
  }
  return worst;
}

}  // namespace weft
