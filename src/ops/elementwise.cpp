// Broadcasting elementwise arithmetic and activations, float32 (int64 for +,-,* and eq),
// with their backward formulas. bf16/fp16 operands compute in float32 and round the result once
// (PyTorch's opmath rule): same-shape contiguous ones in one pass (reduced_map), others through
// the float32 kernels on widened copies, whose casts carry the gradients.
#include <cmath>

#include "ops/cpu/dtype_convert.h"
#include "ops/cpu/loops.h"
#include "ops/cpu/parallel.h"
#include "ops/cuda/cuda_ops.h"  // the CUDA kernels, called in builds WITH_CUDA only
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

bool reduced_mappable(std::initializer_list<const Tensor*> ts);

// Operands that must be widened: mixed dtypes with a 16-bit float, or 16-bit floats on the CPU
// that its one-pass loop (reduced_map) does not take. CUDA kernels take two operands of one
// 16-bit type as they are.
bool widen_operands(const Tensor& a, const Tensor& b) {
  if (!is_reduced_float(a.dtype()) && !is_reduced_float(b.dtype())) return false;
  if (a.dtype() != b.dtype()) return true;
  return !(a.device().is_cuda() || reduced_mappable({&a, &b}));
}

void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  WEFT_CHECK(a.defined() && b.defined(), op, ": undefined tensor argument");
  WEFT_CHECK(a.device() == b.device(), op, ": expected all tensors on the same device, got ",
             a.device(), " and ", b.device());
}

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

// Promotes mixed int64/float32 operands to float32, as PyTorch's type promotion does.
std::pair<Tensor, Tensor> promote(const Tensor& a, const Tensor& b, const char* op) {
  check_same_device(a, b, op);
  if (a.dtype() == b.dtype()) return {a, b};
  WEFT_CHECK((a.dtype() == kFloat32 || a.dtype() == kInt64) &&
                 (b.dtype() == kFloat32 || b.dtype() == kInt64),
             op, ": unsupported dtypes ", a.dtype(), " and ", b.dtype());
  return {a.to(kFloat32), b.to(kFloat32)};
}

template <typename F>
Tensor arith(const Tensor& a0, const Tensor& b0, const char* op,
             [[maybe_unused]] cuda::BinaryOp cop, [[maybe_unused]] double alpha, F f) {
  auto [a, b] = promote(a0, b0, op);  // one 16-bit type passes through, to CUDA's kernels
#ifdef WEFT_WITH_CUDA
  if (a.device().is_cuda()) return cuda::binary(cop, a, b, alpha);
#endif
  if (a.dtype() == kInt64) return binary_kernel<int64_t>(a, b, kInt64, f);
  if (is_reduced_float(a.dtype())) return reduced_map<2>({&a, &b}, f);  // see widen_operands
  WEFT_CHECK(a.dtype() == kFloat32, op, ": unsupported dtype ", a.dtype());
  return binary_kernel<float>(a, b, kFloat32, f);
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b, double alpha) {
  check_same_device(a, b, "add");
  if (widen_operands(a, b)) return add(a.to(kFloat32), b.to(kFloat32), alpha).to(result_type(a, b));
  const auto cop = cuda::BinaryOp::Add;
  Tensor out = alpha == 1.0 ? arith(a, b, "add", cop, alpha, [](auto x, auto y) { return x + y; })
                            : arith(a, b, "add", cop, alpha, [alpha](auto x, auto y) {
                                return x + (decltype(x))(alpha * y);
                              });
  Shape sa = a.sizes(), sb = b.sizes();
  autograd::record("AddBackward", {&a, &b}, out, [sa, sb, alpha](std::vector<Tensor>& g) {
    return std::vector<Tensor>{sum_to(g[0], sa), sum_to(alpha == 1.0 ? g[0] : g[0] * alpha, sb)};
  });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) { return add(a, b, -1.0); }

Tensor mul(const Tensor& a, const Tensor& b) {
  check_same_device(a, b, "mul");
  if (widen_operands(a, b)) return mul(a.to(kFloat32), b.to(kFloat32)).to(result_type(a, b));
  Tensor out = arith(a, b, "mul", cuda::BinaryOp::Mul, 1.0, [](auto x, auto y) { return x * y; });
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
  // On the CPU 16-bit operands always widen: the backward then rounds once, as it always has.
  if (widen_operands(a, b) || (is_reduced_float(a.dtype()) && a.device().is_cpu()))
    return div(a.to(kFloat32), b.to(kFloat32)).to(result_type(a, b));
  // int64 operands divide as float32; 16-bit ones (on CUDA) as they are.
  auto [fa, fb] = is_reduced_float(a.dtype()) ? std::pair<Tensor, Tensor>{a, b}
                                              : promote(a.to(kFloat32), b.to(kFloat32), "div");
#ifdef WEFT_WITH_CUDA
  Tensor out = fa.device().is_cuda()
                   ? cuda::binary(cuda::BinaryOp::Div, fa, fb)
                   : binary_kernel<float>(fa, fb, kFloat32, [](float x, float y) { return x / y; });
#else
  Tensor out = binary_kernel<float>(fa, fb, kFloat32, [](float x, float y) { return x / y; });
#endif
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
// gx = dfn(g, x, y) elementwise over float32 tensors (x the op's input, y its output).
template <typename D>
Tensor unary_grad(const Tensor& g, const Tensor& x, const Tensor& y,
                  [[maybe_unused]] cuda::UnaryOp cop, [[maybe_unused]] double s0,
                  [[maybe_unused]] double s1, D dfn) {
#ifdef WEFT_WITH_CUDA
  if (x.device().is_cuda()) return cuda::unary_backward(cop, g, x, y, s0, s1);
#endif
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

// Unary float op with backward gx = dfn(g, x, y) (x input, y output), elementwise. On CUDA the
// kernels are `cop` with scalars s0, s1 (see cuda/cuda_ops.h), computing the same f and dfn.
// 16-bit inputs: f and dfn run in float32 and each result is rounded once; the backward reads
// the 16-bit input and the rounded output, the tensors PyTorch saves.
template <typename F, typename D>
Tensor unary_op(const Tensor& a, const char* name, Reads reads, [[maybe_unused]] cuda::UnaryOp cop,
                [[maybe_unused]] double s0, [[maybe_unused]] double s1, F f, D dfn) {
  // 16-bit floats on the CPU go through float32 copies; the CUDA kernels take them as they are.
  const bool reduced = a.defined() && is_reduced_float(a.dtype()) && !a.device().is_cuda();
  Tensor out;
  if (reduced) {
    NoGradGuard ng;
    out = reduced_mappable({&a})
              ? reduced_map<1>({&a}, f)
              : unary_op(a.to(kFloat32), name, reads, cop, s0, s1, f, dfn).to(a.dtype());
  } else {
#ifdef WEFT_WITH_CUDA
    out = a.defined() && a.device().is_cuda() ? cuda::unary(cop, a, s0, s1) : unary_kernel(a, f);
#else
    out = unary_kernel(a, f);
#endif
  }
  if (autograd::any_requires_grad({&a})) {
    Tensor x = a.detach(), y = out.detach();
    const bool rx = reads == Reads::X || reads == Reads::XY;
    const bool ry = reads == Reads::Y || reads == Reads::XY;
    autograd::record(name, {&a}, out,
                     [x, y, dfn, cop, s0, s1, reduced](std::vector<Tensor>& g) {
                       if (!reduced)
                         return std::vector<Tensor>{unary_grad(g[0], x, y, cop, s0, s1, dfn)};
                       if (reduced_mappable({&g[0], &x, &y}))
                         return std::vector<Tensor>{reduced_map<3>({&g[0], &x, &y}, dfn)};
                       Tensor gx = unary_grad(g[0].to(kFloat32), x.to(kFloat32), y.to(kFloat32),
                                              cop, s0, s1, dfn);
                       return std::vector<Tensor>{gx.to(x.dtype())};
                     },
                     {rx ? x : Tensor(), ry ? y : Tensor()});
  }
  return out;
}
}  // namespace

Tensor operator+(const Tensor& a, double b) {
  return unary_op(
      a, "AddScalarBackward", Reads::Nothing, cuda::UnaryOp::AddScalar, b, 0,
      [b](float x) { return x + (float)b; }, [](float g, float, float) { return g; });
}
Tensor operator-(const Tensor& a, double b) { return a + (-b); }
Tensor operator*(const Tensor& a, double b) {
  return unary_op(
      a, "MulScalarBackward", Reads::Nothing, cuda::UnaryOp::MulScalar, b, 0,
      [b](float x) { return x * (float)b; }, [b](float g, float, float) { return g * (float)b; });
}
Tensor operator/(const Tensor& a, double b) {
  return unary_op(
      a, "DivScalarBackward", Reads::Nothing, cuda::UnaryOp::DivScalar, b, 0,
      [b](float x) { return x / (float)b; }, [b](float g, float, float) { return g / (float)b; });
}
Tensor operator-(double a, const Tensor& b) {
  return unary_op(
      b, "RsubBackward", Reads::Nothing, cuda::UnaryOp::RSub, a, 0,
      [a](float x) { return (float)a - x; }, [](float g, float, float) { return -g; });
}
Tensor operator/(double a, const Tensor& b) {
  return unary_op(
      b, "RdivBackward", Reads::XY, cuda::UnaryOp::RDiv, a, 0,
      [a](float x) { return (float)a / x; }, [](float g, float x, float y) { return -g * y / x; });
}

Tensor Tensor::operator-() const {
  return unary_op(
      *this, "NegBackward", Reads::Nothing, cuda::UnaryOp::Neg, 0, 0, [](float x) { return -x; },
      [](float g, float, float) { return -g; });
}
Tensor Tensor::exp() const {
  if (amp::autocast_to_float32_on_cuda(*this)) return to(kFloat32).exp();
  return unary_op(
      *this, "ExpBackward", Reads::Y, cuda::UnaryOp::Exp, 0, 0, [](float x) { return std::exp(x); },
      [](float g, float, float y) { return g * y; });
}
Tensor Tensor::log() const {
  if (amp::autocast_to_float32_on_cuda(*this)) return to(kFloat32).log();
  return unary_op(
      *this, "LogBackward", Reads::X, cuda::UnaryOp::Log, 0, 0, [](float x) { return std::log(x); },
      [](float g, float x, float) { return g / x; });
}
Tensor Tensor::sqrt() const {
  return unary_op(
      *this, "SqrtBackward", Reads::Y, cuda::UnaryOp::Sqrt, 0, 0,
      [](float x) { return std::sqrt(x); }, [](float g, float, float y) { return g / (2.0f * y); });
}
Tensor Tensor::abs() const {
  return unary_op(
      *this, "AbsBackward", Reads::X, cuda::UnaryOp::Abs, 0, 0,
      [](float x) { return std::fabs(x); },
      [](float g, float x, float) { return x > 0 ? g : (x < 0 ? -g : 0.0f); });
}
Tensor Tensor::pow(double e) const {
  if (amp::autocast_to_float32_on_cuda(*this)) return to(kFloat32).pow(e);
  return unary_op(
      *this, "PowBackward", Reads::X, cuda::UnaryOp::Pow, e, 0,
      [e](float x) { return (float)std::pow((double)x, e); },
      [e](float g, float x, float) {
        return e == 0 ? 0.0f : (float)(g * e * std::pow((double)x, e - 1));
      });
}
Tensor Tensor::relu() const {
  return unary_op(
      *this, "ReluBackward", Reads::Y, cuda::UnaryOp::Relu, 0, 0,
      // PyTorch's: NaN and -0 pass through; the gradient passes where the output is not <= 0.
      [](float x) { return x < 0 ? 0.0f : x; },
      [](float g, float, float y) { return y <= 0 ? 0.0f : g; });
}
Tensor Tensor::sigmoid() const {
  return unary_op(
      *this, "SigmoidBackward", Reads::Y, cuda::UnaryOp::Sigmoid, 0, 0,
      [](float x) { return 1.0f / (1.0f + std::exp(-x)); },
      [](float g, float, float y) { return g * y * (1.0f - y); });
}
Tensor Tensor::tanh() const {
  return unary_op(
      *this, "TanhBackward", Reads::Y, cuda::UnaryOp::Tanh, 0, 0,
      [](float x) { return std::tanh(x); },
      [](float g, float, float y) { return g * (1.0f - y * y); });
}
Tensor Tensor::clamp(std::optional<double> mn, std::optional<double> mx) const {
  float lo = mn ? (float)*mn : -INFINITY, hi = mx ? (float)*mx : INFINITY;
  return unary_op(
      *this, "ClampBackward", Reads::X, cuda::UnaryOp::Clamp, lo, hi,
      [lo, hi](float x) { return std::min(std::max(x, lo), hi); },
      [lo, hi](float g, float x, float) { return x >= lo && x <= hi ? g : 0.0f; });
}

Tensor Tensor::eq(const Tensor& other) const {
  // 16-bit floats compare exactly as float32.
  auto widen = [](const Tensor& t) { return t.dtype() == kInt64 ? t : t.to(kFloat32); };
  auto [a, b] = promote(widen(*this), widen(other), "eq");
#ifdef WEFT_WITH_CUDA
  if (a.device().is_cuda()) return cuda::binary(cuda::BinaryOp::Eq, a, b);
#endif
  if (a.dtype() == kInt64)
    return binary_kernel<int64_t>(a, b, kInt64, [](int64_t x, int64_t y) { return x == y; });
  return binary_kernel<float>(a, b, kInt64, [](float x, float y) { return (int64_t)(x == y); });
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
// self[i] = f(self[i], other[i]) with other broadcast to self.
template <typename F>
void inplace_binary(Tensor& self, const Tensor& other, F f) {
  check_same_device(self, other, "in-place op");
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
}  // namespace

Tensor& Tensor::add_(const Tensor& other0, double alpha) {
  begin_inplace(*this, other0, "add_");
  if (is_reduced_float(dtype()))
    return inplace_widened(*this, [&](Tensor& w) { w.add_(other0, alpha); });
  const Tensor other = as_float32(other0);
#ifdef WEFT_WITH_CUDA
  if (device().is_cuda()) {
    check_same_device(*this, other, "add_");
    cuda::binary_(cuda::BinaryOp::Add, *this, other, alpha);
    return *this;
  }
#endif
  float a = (float)alpha;
  if (alpha == 1.0)
    inplace_binary(*this, other, [](float x, float y) { return x + y; });
  else
    inplace_binary(*this, other, [a](float x, float y) { return x + a * y; });
  return *this;
}

Tensor& Tensor::add_(double value) {
  begin_inplace(*this, "add_");
  if (is_reduced_float(dtype())) return inplace_widened(*this, [&](Tensor& w) { w.add_(value); });
#ifdef WEFT_WITH_CUDA
  if (device().is_cuda()) {
    cuda::scalar_(cuda::UnaryOp::AddScalar, *this, value);
    return *this;
  }
#endif
  float v = (float)value;
  inplace_binary(*this, scalar_tensor(0), [v](float x, float) { return x + v; });
  return *this;
}

Tensor& Tensor::mul_(double value) {
  begin_inplace(*this, "mul_");
  if (is_reduced_float(dtype())) return inplace_widened(*this, [&](Tensor& w) { w.mul_(value); });
#ifdef WEFT_WITH_CUDA
  if (device().is_cuda()) {
    cuda::scalar_(cuda::UnaryOp::MulScalar, *this, value);
    return *this;
  }
#endif
  float v = (float)value;
  inplace_binary(*this, scalar_tensor(0), [v](float x, float) { return x * v; });
  return *this;
}

Tensor& Tensor::mul_(const Tensor& other0) {
  begin_inplace(*this, other0, "mul_");
  if (is_reduced_float(dtype())) return inplace_widened(*this, [&](Tensor& w) { w.mul_(other0); });
  const Tensor other = as_float32(other0);
#ifdef WEFT_WITH_CUDA
  if (device().is_cuda()) {
    check_same_device(*this, other, "mul_");
    cuda::binary_(cuda::BinaryOp::Mul, *this, other);
    return *this;
  }
#endif
  inplace_binary(*this, other, [](float x, float y) { return x * y; });
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
