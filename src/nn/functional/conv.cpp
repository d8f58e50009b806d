// conv2d: the argument checks, the device's kernels (ops/stubs/conv.h; Note [Device dispatch])
// and one autograd node whose backward is the device's too. 16-bit inputs the device has no
// kernel for run the float32 convolution on widened copies, rounded once.
#include "ops/stubs/conv.h"

#include <string>

#include "weft/amp/autocast.h"
#include "weft/autograd.h"
#include "weft/nn/functional.h"
#include "weft/ops.h"

namespace weft::nn::functional {

namespace {

void check_conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias,
                  std::array<int64_t, 2> stride, std::array<int64_t, 2> padding,
                  std::array<int64_t, 2> dilation, int64_t groups) {
  WEFT_CHECK(input.dim() == 4, "conv2d expects a 4-D input [N, C, H, W], got ", input.str());
  WEFT_CHECK(weight.dim() == 4, "conv2d expects a 4-D weight [K, C/groups, kh, kw], got ",
             weight.str());
  WEFT_CHECK(input.dtype() == weight.dtype() && (!bias.defined() || bias.dtype() == weight.dtype()),
             "conv2d: expected input, weight and bias of one dtype, got ", input.str(), ", ",
             weight.str(), (bias.defined() ? ", " + bias.str() : std::string()));
  WEFT_CHECK(is_floating_point(input.dtype()), "conv2d expects a float dtype, got ", input.str(),
             " and ", weight.str());
  WEFT_CHECK(input.device() == weight.device(), "conv2d: input on ", input.device(),
             " but weight on ", weight.device());
  WEFT_CHECK(groups > 0 && input.size(1) % groups == 0 && weight.size(0) % groups == 0,
             "conv2d: groups=", groups, " must divide in_channels ", input.size(1),
             " and out_channels ", weight.size(0));
  WEFT_CHECK(weight.size(1) * groups == input.size(1), "conv2d: weight ", shape_str(weight.sizes()),
             " with groups=", groups, " expects ", weight.size(1) * groups,
             " input channels, but input ", shape_str(input.sizes()), " has ", input.size(1));
  WEFT_CHECK(stride[0] > 0 && stride[1] > 0 && dilation[0] > 0 && dilation[1] > 0 &&
                 padding[0] >= 0 && padding[1] >= 0,
             "conv2d: stride and dilation must be positive and padding non-negative");
  const int64_t kh = weight.size(2), kw = weight.size(3);
  const int64_t Ho = (input.size(2) + 2 * padding[0] - dilation[0] * (kh - 1) - 1) / stride[0] + 1;
  const int64_t Wo = (input.size(3) + 2 * padding[1] - dilation[1] * (kw - 1) - 1) / stride[1] + 1;
  WEFT_CHECK(Ho > 0 && Wo > 0, "conv2d: kernel ", shape_str({kh, kw}),
             " is larger than the padded input ", shape_str(input.sizes()));
  if (bias.defined())
    WEFT_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "conv2d: bias ", bias.str(),
               " does not match ", weight.size(0), " output channels");
}

// One ConvolutionBackward node for out = conv2d(x, w) + bias, x and w the contiguous input and
// weight the kernel ran on.
void record_conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias, const Tensor& x,
                   const Tensor& w, Tensor& out, const ops::ConvParams& p) {
  if (!autograd::any_requires_grad({&input, &weight, &bias})) return;
  bool gx = input.requires_grad(), gw = weight.requires_grad(), gb = bias.requires_grad();
  Tensor xs = x.detach(), ws = w.detach();
  autograd::record("ConvolutionBackward", {&input, &weight, &bias}, out,
                   [xs, ws, p, gx, gw, gb](std::vector<Tensor>& grads) {
                     auto r =
                         ops::conv2d_backward_stub(xs.device(), xs, ws, grads[0], p, gx, gw, gb);
                     return std::vector<Tensor>{r.dx, r.dw, r.db};
                   },
                   {gx ? ws : Tensor(), gw ? xs : Tensor()});
}

}  // namespace

Tensor conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias,
              std::array<int64_t, 2> stride, std::array<int64_t, 2> padding,
              std::array<int64_t, 2> dilation, int64_t groups) {
  if (amp::autocast_active(input)) {
    using amp::autocast_lower_precision;
    Tensor x = autocast_lower_precision(input), w = autocast_lower_precision(weight),
           b = autocast_lower_precision(bias);
    amp::AutocastSuspend inside;
    return conv2d(x, w, b, stride, padding, dilation, groups);
  }
  check_conv2d(input, weight, bias, stride, padding, dilation, groups);
  const ops::ConvParams p{stride[0],   stride[1],   padding[0], padding[1],
                          dilation[0], dilation[1], groups};
  Tensor x = input.contiguous(), w = weight.contiguous();
  Tensor out = ops::conv2d_stub(input.device(), x, w, bias, p);
  if (!out.defined())  // a 16-bit input the device's kernels do not take
    return conv2d(input.to(kFloat32), weight.to(kFloat32),
                  bias.defined() ? bias.to(kFloat32) : bias, stride, padding, dilation, groups)
        .to(input.dtype());
  record_conv2d(input, weight, bias, x, w, out, p);
  return out;
}

}  // namespace weft::nn::functional
