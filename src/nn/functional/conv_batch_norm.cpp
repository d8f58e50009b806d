// conv2d_batch_norm_relu: a Conv2d, a training-mode BatchNorm and a ReLU as one op with one
// autograd node (Note [Conv-BatchNorm-ReLU fusion]) where the device's kernels take it
// (ops/stubs/conv_batch_norm.h), else the three ops composed, which give the same values.
#include "ops/stubs/conv_batch_norm.h"

#include <initializer_list>

#include "nn/functional/conv_check.h"
#include "weft/amp/autocast.h"
#include "weft/autograd.h"
#include "weft/nn/batch_norm_kernels.h"
#include "weft/nn/functional.h"
#include "weft/ops.h"

namespace weft::nn::functional {

namespace {

// Whether the fused kernels run this: float32 throughout on a device with the kernels, outside
// autocast, batch norm's tensors [K], and a bias gradient only with the weight's (the kernels'
// convolution sums db on the way to dw). Shapes conv2d refuses are left to conv2d's errors.
bool fuses(const Tensor& input, const Tensor& conv_weight, const Tensor& conv_bias,
           const ops::ConvParams& p, std::initializer_list<const Tensor*> bn) {
  if (!ops::conv2d_batch_norm_takes_stub.has_kernel(input.device().type) ||
      amp::autocast_active(input) || input.dim() != 4 || conv_weight.dim() != 4)
    return false;
  if (conv_bias.defined() && conv_bias.requires_grad() && !conv_weight.requires_grad())
    return false;
  const int64_t K = conv_weight.size(0);
  for (const Tensor* t : {&input, &conv_weight, &conv_bias})
    if (t->defined() && t->dtype() != kFloat32) return false;
  for (const Tensor* t : bn)
    if (t->defined() && (t->dtype() != kFloat32 || t->dim() != 1 || t->size(0) != K ||
                         t->device() != input.device()))
      return false;
  detail::check_conv2d(input, conv_weight, conv_bias, {p.sh, p.sw}, {p.ph, p.pw}, {p.dh, p.dw},
                       p.groups);
  return ops::conv2d_batch_norm_takes_stub(input.device(), input.contiguous(),
                                           conv_weight.contiguous(), conv_bias, p);
}

}  // namespace

Tensor conv2d_batch_norm_relu(const Tensor& input, const Tensor& conv_weight,
                              const Tensor& conv_bias, std::array<int64_t, 2> stride,
                              std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation,
                              int64_t groups, Tensor running_mean, Tensor running_var,
                              const Tensor& weight, const Tensor& bias, double momentum,
                              double eps) {
  const ops::ConvParams p{stride[0],   stride[1],   padding[0], padding[1],
                          dilation[0], dilation[1], groups};
  if (!fuses(input, conv_weight, conv_bias, p, {&running_mean, &running_var, &weight, &bias}))
    return batch_norm_relu(conv2d(input, conv_weight, conv_bias, stride, padding, dilation, groups),
                           running_mean, running_var, weight, bias, true, momentum, eps);
  Tensor x = input.contiguous(), w = conv_weight.contiguous();
  ops::ConvBatchNormForward f = ops::conv2d_batch_norm_stub(x.device(), x, w, conv_bias, p);
  // As batch_norm's training mode: the running statistics from the batch's, then the output.
  const int64_t count = f.y.numel() / f.mean.numel();
  if (running_mean.defined())
    detail::update_running_stats(running_mean, running_var, f.mean, f.var, count, momentum);
  Tensor invstd = (f.var + eps).pow(-0.5);
  Tensor out =
      ops::conv2d_batch_norm_relu_elemt_stub(x.device(), f.y, f.mean, invstd, weight, bias);
  if (!autograd::any_requires_grad({&input, &conv_weight, &conv_bias, &weight, &bias})) return out;
  const bool gx = input.requires_grad(), gw = conv_weight.requires_grad(),
             gb = conv_bias.requires_grad(), gbw = weight.requires_grad(),
             gbb = bias.requires_grad();
  Tensor xs = x.detach(), ws = w.detach(), y = f.y, mean = f.mean;
  Tensor bw = weight.defined() ? weight.detach() : Tensor();
  Tensor bb = bias.defined() ? bias.detach() : Tensor();
  autograd::record(
      "ConvBatchNormReluBackward", {&input, &conv_weight, &conv_bias, &weight, &bias}, out,
      [xs, ws, y, mean, invstd, bw, bb, p, count, gx, gw, gb, gbw, gbb](std::vector<Tensor>& g) {
        ops::ConvBatchNormReluGrads r = ops::conv2d_batch_norm_relu_backward_stub(
            xs.device(), g[0], xs, ws, y, mean, invstd, bw, bb, p, count, gx, gw, gb);
        return std::vector<Tensor>{r.dx, r.dw, r.db, gbw ? r.sum_dy_xmu * invstd : Tensor(),
                                   gbb ? r.sum_dy : Tensor()};
      },
      {gx ? ws : Tensor(), gw ? xs : Tensor(), bw, bb});
  return out;
}

}  // namespace weft::nn::functional
