// conv2d_batch_norm_relu: a Conv2d, a training-mode BatchNorm and a ReLU as one op with one
// autograd node (Note [Conv-BatchNorm-ReLU fusion]) where the device's kernels take it
// (ops/stubs/conv_batch_norm.h), else the three ops composed, which give the same values.
#include "ops/stubs/conv_batch_norm.h"

#include <initializer_list>

#include "nn/functional/conv_batch_norm.h"
#include "weft/amp/autocast.h"
#include "weft/autograd.h"
#include "weft/nn/batch_norm_kernels.h"
#include "weft/nn/functional.h"
#include "weft/ops.h"

namespace weft::nn {

namespace {

// Whether conv2d takes an input of NCHW shape x with w, b and p (else conv2d's own checks will
// say what is wrong).
bool conv_fits(const Shape& x, const Tensor& w, const Tensor& b, const ops::ConvParams& p) {
  if (x.size() != 4 || w.dim() != 4 || p.groups <= 0 || x[1] != w.size(1) * p.groups ||
      w.size(0) % p.groups != 0 || p.sh <= 0 || p.sw <= 0 || p.dh <= 0 || p.dw <= 0 || p.ph < 0 ||
      p.pw < 0)
    return false;
  const int64_t Ho = (x[2] + 2 * p.ph - p.dh * (w.size(2) - 1) - 1) / p.sh + 1;
  const int64_t Wo = (x[3] + 2 * p.pw - p.dw * (w.size(3) - 1) - 1) / p.sw + 1;
  return Ho > 0 && Wo > 0 && (!b.defined() || (b.dim() == 1 && b.size(0) == w.size(0)));
}

// The NCHW shape of an input, channel-blocked or not.
Shape nchw_shape(const Tensor& x, bool blocked) {
  if (!blocked) return x.sizes();
  return {x.size(0), x.size(1) * x.size(4), x.size(2), x.size(3)};
}

// Whether the fused kernels run this: float32 throughout on one device with the kernels,
// outside autocast, shapes conv2d and batch_norm take, and a bias gradient only with the
// weight's (the kernels' convolution sums db on the way to dw).
bool fuses(const Tensor& input, bool blocked, const Tensor& conv_weight, const Tensor& conv_bias,
           const ops::ConvParams& p, std::initializer_list<const Tensor*> bn) {
  if (!ops::conv2d_batch_norm_takes_stub.has_kernel(input.device().type) ||
      amp::autocast_active(input) ||
      !conv_fits(nchw_shape(input, blocked), conv_weight, conv_bias, p))
    return false;
  if (conv_bias.defined() && conv_bias.requires_grad() && !conv_weight.requires_grad())
    return false;
  for (const Tensor* t : {&input, &conv_weight, &conv_bias})
    if (t->defined() && (t->dtype() != kFloat32 || t->device() != input.device())) return false;
  for (const Tensor* t : bn)
    if (t->defined() && (t->dtype() != kFloat32 || t->dim() != 1 ||
                         t->size(0) != conv_weight.size(0) || t->device() != input.device()))
      return false;
  return ops::conv2d_batch_norm_takes_stub(input.device(), input.contiguous(),
                                           conv_weight.contiguous(), conv_bias, p);
}

}  // namespace

namespace detail {

Tensor to_nchw(const Tensor& blocked) {
  Tensor out = ops::conv2d_batch_norm_layout_stub(blocked.device(), blocked, 0);
  if (blocked.requires_grad()) {
    const int64_t B = blocked.size(4);
    autograd::record(
        "ToNchwBackward", {&blocked}, out,
        [B](std::vector<Tensor>& g) {
          return std::vector<Tensor>{ops::conv2d_batch_norm_layout_stub(g[0].device(), g[0], B)};
        },
        {});
  }
  return out;
}

Tensor conv2d_batch_norm_relu(const Tensor& input, bool input_blocked, const Tensor& conv_weight,
                              const Tensor& conv_bias, const ConvBatchNormArgs& a,
                              bool blocked_output) {
  const ops::ConvParams p{a.stride[0],   a.stride[1],   a.padding[0], a.padding[1],
                          a.dilation[0], a.dilation[1], a.groups};
  const Tensor &weight = a.weight, &bias = a.bias;
  Tensor running_mean = a.running_mean, running_var = a.running_var;
  if (!fuses(input, input_blocked, conv_weight, conv_bias, p,
             {&running_mean, &running_var, &weight, &bias}))
    return functional::batch_norm_relu(
        functional::conv2d(input_blocked ? to_nchw(input) : input, conv_weight, conv_bias, a.stride,
                           a.padding, a.dilation, a.groups),
        running_mean, running_var, weight, bias, true, a.momentum, a.eps);
  Tensor x = input.contiguous(), w = conv_weight.contiguous();
  ops::ConvBatchNormForward f = ops::conv2d_batch_norm_stub(x.device(), x, w, conv_bias, p);
  // As batch_norm's training mode: the running statistics from the batch's, then the output.
  const int64_t count = f.y.numel() / f.mean.numel();
  if (running_mean.defined())
    update_running_stats(running_mean, running_var, f.mean, f.var, count, a.momentum);
  Tensor invstd = (f.var + a.eps).pow(-0.5);
  Tensor out = ops::conv2d_batch_norm_relu_elemt_stub(x.device(), f.y, f.mean, invstd, weight, bias,
                                                      blocked_output);
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

}  // namespace detail

namespace functional {

Tensor conv2d_batch_norm_relu(const Tensor& input, const Tensor& conv_weight,
                              const Tensor& conv_bias, std::array<int64_t, 2> stride,
                              std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation,
                              int64_t groups, Tensor running_mean, Tensor running_var,
                              const Tensor& weight, const Tensor& bias, double momentum,
                              double eps) {
  return detail::conv2d_batch_norm_relu(
      input, false, conv_weight, conv_bias,
      {stride, padding, dilation, groups, running_mean, running_var, weight, bias, momentum, eps},
      false);
}

}  // namespace functional
}  // namespace weft::nn
