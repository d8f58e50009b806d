// linear as one fused op (PyTorch's addmm) where the device has the kernel (ops/stubs/linalg.h):
// the bias initialises the output and one GEMM accumulates x W^T into it; one backward node
// yields dx, dW and db. Fewer tensors and nodes than mm + add matter for small, overhead-bound
// layers. Elsewhere (CUDA) it is mm plus the broadcast bias.
#include <algorithm>

#include "ops/stubs/linalg.h"
#include "weft/amp/autocast.h"
#include "weft/autograd.h"
#include "weft/nn/functional.h"
#include "weft/ops.h"

namespace weft::nn::functional {

namespace {

// dW = scale * g^T x, written into `dest`. The factor goes on the smallest of g, x and dW: for a
// power-of-two scale every product and partial sum is scaled exactly, so the bits are those of
// scaling dW afterwards (subnormal operands aside).
void weight_gradient_into(const Tensor& g, const Tensor& x, const Tensor& dest, float scale) {
  const bool after = scale != 1.0f && std::min(g.numel(), x.numel()) > dest.numel();
  Tensor a = g, b = x;
  if (scale != 1.0f && !after) {
    if (g.numel() <= x.numel())
      a = g * scale;
    else
      b = x * scale;
  }
  ops::gemm_stub(dest.device(), a, true, b, false, dest, 0.0f);
  if (after) Tensor(dest).mul_(scale);
}

}  // namespace

Tensor linear(const Tensor& input, const Tensor& weight, const Tensor& bias) {
  if (amp::autocast_active(input)) {
    using amp::autocast_lower_precision;
    Tensor x = autocast_lower_precision(input), w = autocast_lower_precision(weight),
           b = autocast_lower_precision(bias);
    amp::AutocastSuspend inside;
    return linear(x, w, b);
  }
  WEFT_CHECK(input.dtype() == weight.dtype() && (!bias.defined() || bias.dtype() == weight.dtype()),
             "linear: expected input, weight and bias of one dtype, got ", input.str(), ", ",
             weight.str(), (bias.defined() ? ", " + bias.str() : std::string()));
  // 16-bit floats: float32 accumulation (PyTorch's), the result rounded once. CUDA runs them
  // through cuBLAS below, bf16 on the CPU through oneDNN where it has a native kernel; otherwise
  // the float32 addmm on widened copies.
  auto widened = [&] {
    return linear(input.to(kFloat32), weight.to(kFloat32),
                  bias.defined() ? bias.to(kFloat32) : bias)
        .to(input.dtype());
  };
  if (is_reduced_float(input.dtype()) &&
      !ops::gemm_reduced_native_stub(input.device(), input.dtype()))
    return widened();
  WEFT_CHECK(weight.dim() == 2, "linear expects a 2-D weight, got ", weight.str());
  WEFT_CHECK(input.dim() >= 1 && input.size(-1) == weight.size(1), "linear: input ",
             shape_str(input.sizes()), " does not match weight ", shape_str(weight.sizes()),
             " (in_features ", weight.size(1), ")");
  Tensor x2 = input.dim() == 2 ? input : input.reshape({-1, input.size(-1)});
  Shape out_shape = input.sizes();
  out_shape.back() = weight.size(0);
  if (!bias.defined()) {
    Tensor out = mm(x2, weight, false, true);
    return input.dim() == 2 ? out : out.view(out_shape);
  }
  WEFT_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "linear: bias ", bias.str(),
             " does not match ", weight.size(0), " out_features");
  WEFT_CHECK(input.device() == weight.device() && bias.device() == weight.device(),
             "linear: input on ", input.device(), ", weight on ", weight.device(), ", bias on ",
             bias.device());
  if (!ops::addmm_stub.has_kernel(input.device().type)) {  // mm; the bias added by broadcasting
    Tensor out = mm(x2, weight, false, true) + bias;
    return input.dim() == 2 ? out : out.view(out_shape);
  }
  WEFT_CHECK(input.dtype() == kFloat32 || is_reduced_float(input.dtype()),
             "linear expects float32 tensors, got ", input.str());
  Tensor x = x2.contiguous(), w = weight.contiguous();
  Tensor out = ops::addmm_stub(input.device(), x, w, bias);
  if (!out.defined()) return widened();  // no native kernel for it, or an empty product
  if (autograd::any_requires_grad({&x2, &weight, &bias})) {
    bool gx = x2.requires_grad(), gw = weight.requires_grad(), gb = bias.requires_grad();
    Tensor xs = x.detach(), ws = w.detach();
    // The leaf weight itself (else undefined): its gradient may go elsewhere (below).
    Tensor leaf = gw && w.is_same(weight) && !weight.grad_fn() ? weight : Tensor();
    autograd::record("AddmmBackward", {&x2, &weight, &bias}, out,
                     [xs, ws, leaf, gx, gw, gb](std::vector<Tensor>& g) {
                       Tensor dx = gx ? mm(g[0], ws) : Tensor(), dw;
                       // dx was the last read of the weight's values: where the weight's owner
                       // allows, dW = g^T x goes over them or into the place it names, not
                       // into a buffer of its own:
                       // Note [Gradient into the parameter's memory],
                       // Note [Gradient into a destination].
                       const autograd::GradientTarget t = gw && leaf.defined()
                                                              ? autograd::gradient_target(leaf)
                                                              : autograd::GradientTarget{};
                       if (t.values.defined()) {
                         weight_gradient_into(g[0], xs, t.values, t.scale);
                         dw = t.values;
                       } else if (gw) {
                         dw = mm(g[0], xs, true, false);
                       }
                       return std::vector<Tensor>{dx, dw, gb ? g[0].sum({0}) : Tensor()};
                     },
                     {gx ? ws : Tensor(), gw ? xs : Tensor()});
  }
  return input.dim() == 2 ? out : out.view(out_shape);
}

}  // namespace weft::nn::functional
