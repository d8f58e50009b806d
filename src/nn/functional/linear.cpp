// linear as one fused op (PyTorch's addmm) where the device has the kernel (ops/stubs/linalg.h):
// the bias initialises the output and one GEMM accumulates x W^T into it; one backward node
// yields dx, dW and db. Fewer tensors and nodes than mm + add matter for small, overhead-bound
// layers. Elsewhere (CUDA) it is mm plus the broadcast bias.
#include "ops/stubs/linalg.h"
#include "weft/amp/autocast.h"
#include "weft/autograd.h"
#include "weft/nn/functional.h"
#include "weft/ops.h"

namespace weft::nn::functional {

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
    // A marked leaf weight itself (else undefined): its gradient may go over it (below).
    const AutogradMeta* wm = weight.impl()->autograd.get();
    Tensor leaf = gw && w.is_same(weight) && wm && wm->grad_overwrites_values ? weight : Tensor();
    autograd::record("AddmmBackward", {&x2, &weight, &bias}, out,
                     [xs, ws, leaf, gx, gw, gb](std::vector<Tensor>& g) {
                       Tensor dx = gx ? mm(g[0], ws) : Tensor(), dw;
                       // dx was the last read of the weight's values: where its owner allows,
                       // dW = g^T x goes over them, not into a buffer of its own:
                       // Note [Gradient into the parameter's memory].
                       if (gw && leaf.defined() && autograd::may_write_gradient_into(leaf)) {
                         ops::gemm_stub(ws.device(), g[0], true, xs, false, ws, 0.0f);
                         dw = ws;
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
