// Batch normalisation: the pieces of nn/batch_norm_kernels.h, which check their arguments and
// run the device's kernels (ops/stubs/batch_norm.h; Note [Device dispatch]), and the
// differentiable functional::batch_norm built from them.
#include "ops/stubs/batch_norm.h"

#include <algorithm>
#include <vector>

#include "weft/autograd.h"
#include "weft/nn/batch_norm_kernels.h"
#include "weft/nn/functional.h"
#include "weft/ops.h"

namespace weft::nn {
namespace detail {

namespace {
struct Layout {
  int64_t n, c, s;
};
Layout layout_of(const Tensor& x) {
  WEFT_CHECK(x.dim() >= 2, "batch_norm expects an input of at least 2 dims [N, C, ...], got ",
             x.str());
  WEFT_CHECK(is_floating_point(x.dtype()), "batch_norm expects a float dtype, got ", x.str());
  int64_t s = 1;
  for (int64_t i = 2; i < x.dim(); ++i) s *= x.size(i);
  return {x.size(0), x.size(1), s};
}
}  // namespace

ChannelStats batch_norm_stats(const Tensor& x) {
  auto [N, C, S] = layout_of(x);
  auto [mean, var] = ops::batch_norm_stats_stub(x.device(), x);
  return {mean, var, N * S};
}

Tensor batch_norm_elemt(const Tensor& x, const Tensor& mean, const Tensor& invstd,
                        const Tensor& weight, const Tensor& bias) {
  layout_of(x);
  return ops::batch_norm_elemt_stub(x.device(), x, mean, invstd, weight, bias);
}

std::pair<Tensor, Tensor> batch_norm_backward_reduce(const Tensor& dy, const Tensor& x,
                                                     const Tensor& mean) {
  layout_of(x);
  return ops::batch_norm_backward_reduce_stub(x.device(), dy, x, mean);
}

Tensor batch_norm_backward_elemt(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                 const Tensor& invstd, const Tensor& weight, const Tensor& sum_dy,
                                 const Tensor& sum_dy_xmu, int64_t count) {
  layout_of(x);
  return ops::batch_norm_backward_elemt_stub(x.device(), dy, x, mean, invstd, weight, sum_dy,
                                             sum_dy_xmu, Tensor(), count);
}

void update_running_stats(Tensor& running_mean, Tensor& running_var, const Tensor& mean,
                          const Tensor& var, int64_t count, double momentum) {
  ops::update_running_stats_stub(mean.device(), running_mean, running_var, mean, var, Tensor(),
                                 count, momentum);
}

Tensor pack_channel_stats(const ChannelStats& local) {
  const int64_t C = local.mean.numel();
  NoGradGuard ng;
  // Filled where the statistics live, so that a CUDA row needs no host-to-device copy.
  Tensor row = empty({2 + 2 * C}, {.device = local.mean.device()});
  row.narrow(0, 0, 1).fill_((double)(local.count >> 24));
  row.narrow(0, 1, 1).fill_((double)(local.count & 0xffffff));
  row.narrow(0, 2, C).copy_(local.mean);
  row.narrow(0, 2 + C, C).copy_(local.var);
  return row;
}

GatheredStats combine_channel_stats(const Tensor& rows0) {
  Tensor rows = rows0.contiguous();
  WEFT_CHECK(
      rows.dtype() == kFloat32 && rows.dim() == 2 && rows.size(1) >= 2 && rows.size(1) % 2 == 0,
      "combine_channel_stats expects float32 rows [replicas, 2 + 2C], got ", rows.str());
  ops::BatchNormGathered g = ops::batch_norm_gather_stats_stub(rows.device(), rows);
  return {g.mean, g.var, g.count, g.device_count};
}

// The overloads with a device count are for CUDA tensors only: on the CPU the count is a host
// integer (combine_channel_stats), and taking it from a tensor would hide a device read. The
// CPU's kernels refuse it.
void update_running_stats(Tensor& running_mean, Tensor& running_var, const Tensor& mean,
                          const Tensor& var, const Tensor& device_count, double momentum) {
  WEFT_CHECK(device_count.defined(), "update_running_stats: undefined element count");
  ops::update_running_stats_stub(mean.device(), running_mean, running_var, mean, var, device_count,
                                 0, momentum);
}

Tensor batch_norm_backward_elemt(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                 const Tensor& invstd, const Tensor& weight, const Tensor& sum_dy,
                                 const Tensor& sum_dy_xmu, const Tensor& device_count) {
  WEFT_CHECK(device_count.defined(), "batch_norm_backward_elemt: undefined element count");
  return ops::batch_norm_backward_elemt_stub(x.device(), dy, x, mean, invstd, weight, sum_dy,
                                             sum_dy_xmu, device_count, 0);
}

bool batch_norm_needs_widening(const Tensor& input, const Tensor& running_mean,
                               const Tensor& running_var, const Tensor& weight,
                               const Tensor& bias) {
  for (const Tensor* t : {&running_mean, &running_var, &weight, &bias})
    if (t->defined() && is_reduced_float(t->dtype())) return true;
  // The CPU kernels take a 16-bit input with float32 parameters (autocast's case) as it is.
  return is_reduced_float(input.dtype()) &&
         !ops::batch_norm_reduced_native_stub(input.device(), input.dtype());
}

Tensor batch_norm_widened(const Tensor& input, Tensor& running_mean, Tensor& running_var,
                          const Tensor& weight, const Tensor& bias, const BatchNormFn& run) {
  auto widen = [](const Tensor& t) { return t.defined() ? t.to(kFloat32) : t; };
  Tensor rm = widen(running_mean), rv = widen(running_var);
  Tensor out = run(widen(input), rm, rv, widen(weight), widen(bias));
  {
    NoGradGuard ng;
    if (rm.defined() && rm.impl() != running_mean.impl()) running_mean.copy_(rm);
    if (rv.defined() && rv.impl() != running_var.impl()) running_var.copy_(rv);
  }
  return out.to(input.dtype());
}

}  // namespace detail

namespace functional {

namespace {

// The autograd node of a batch norm, with (relu) or without a ReLU fused after it.
void record_batch_norm(const Tensor& input, const Tensor& weight, const Tensor& bias, Tensor& out,
                       const Tensor& mean, const Tensor& invstd, bool training, int64_t count,
                       bool relu) {
  using namespace detail;
  Tensor x = input.detach(), w = weight.defined() ? weight.detach() : Tensor();
  bool gw = weight.requires_grad(), gb = bias.requires_grad();
  if (relu) {  // Note [BatchNorm-ReLU fusion]: the mask is recomputed from x, w and b
    Tensor b = bias.defined() ? bias.detach() : Tensor();
    autograd::record("BatchNormReluBackward", {&input, &weight, &bias}, out,
                     [x, w, b, mean, invstd, count, gw, gb](std::vector<Tensor>& g) {
                       ops::BatchNormReluGrads r = ops::batch_norm_relu_backward_stub(
                           x.device(), g[0], x, mean, invstd, w, b, count);
                       return std::vector<Tensor>{r.dx, gw ? r.sum_dy_xmu * invstd : Tensor(),
                                                  gb ? r.sum_dy : Tensor()};
                     },
                     {x, w, b});
    return;
  }
  autograd::record(
      "BatchNormBackward", {&input, &weight, &bias}, out,
      [x, w, mean, invstd, training, count, gw, gb](std::vector<Tensor>& g) {
        auto [sdy, sdyx] = batch_norm_backward_reduce(g[0], x, mean);
        Tensor dx;
        if (training) {
          dx = batch_norm_backward_elemt(g[0], x, mean, invstd, w, sdy, sdyx, count);
        } else {
          Tensor scale = w.defined() ? invstd * w : invstd;
          dx = batch_norm_elemt(g[0], zeros_like(mean), scale, Tensor(), Tensor());
        }
        return std::vector<Tensor>{dx, gw ? sdyx * invstd : Tensor(), gb ? sdy : Tensor()};
      },
      {x, w});
}

// batch_norm, followed by a ReLU in the same kernels when `relu` (batch_norm_relu has checked
// that they take the input).
Tensor batch_norm_impl(const Tensor& input, Tensor running_mean, Tensor running_var,
                       const Tensor& weight, const Tensor& bias, bool training, double momentum,
                       double eps, bool relu) {
  using namespace detail;
  const int64_t C = input.dim() >= 2 ? input.size(1) : -1;
  WEFT_CHECK(input.dim() >= 2, "batch_norm expects [N, C, ...], got ", input.str());
  for (const Tensor* t :
       std::initializer_list<const Tensor*>{&running_mean, &running_var, &weight, &bias})
    WEFT_CHECK(!t->defined() || (t->dim() == 1 && t->size(0) == C), "batch_norm: input has ", C,
               " channels but a parameter/buffer has shape ", shape_str(t->sizes()));
  Tensor mean, var, invstd;
  int64_t count = input.numel() / std::max<int64_t>(C, 1);
  if (training) {
    WEFT_CHECK(count > 1, "Expected more than 1 value per channel when training, got input ",
               input.str());
    ChannelStats st = batch_norm_stats(input);
    mean = st.mean;
    var = st.var;
    if (running_mean.defined())
      update_running_stats(running_mean, running_var, mean, var, count, momentum);
  } else {
    WEFT_CHECK(running_mean.defined(), "batch_norm in eval mode needs running statistics");
    mean = running_mean.detach().clone();
    var = running_var.detach().clone();
  }
  invstd = (var + eps).pow(-0.5);
  Tensor out =
      relu ? ops::batch_norm_relu_elemt_stub(input.device(), input, mean, invstd, weight, bias)
           : batch_norm_elemt(input, mean, invstd, weight, bias);
  if (autograd::any_requires_grad({&input, &weight, &bias}))
    record_batch_norm(input, weight, bias, out, mean, invstd, training, count, relu);
  return out;
}

}  // namespace

Tensor batch_norm(const Tensor& input, Tensor running_mean, Tensor running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum,
                  double eps) {
  using namespace detail;
  if (batch_norm_needs_widening(input, running_mean, running_var, weight, bias))
    return batch_norm_widened(
        input, running_mean, running_var, weight, bias,
        [&](const Tensor& x, Tensor rm, Tensor rv, const Tensor& w, const Tensor& b) {
          return batch_norm(x, rm, rv, w, b, training, momentum, eps);
        });
  return batch_norm_impl(input, running_mean, running_var, weight, bias, training, momentum, eps,
                         false);
}

// Fused only where a kernel exists (the CPU's), in training mode and for float32 throughout;
// everything else is the composition, which gives the same values.
Tensor batch_norm_relu(const Tensor& input, Tensor running_mean, Tensor running_var,
                       const Tensor& weight, const Tensor& bias, bool training, double momentum,
                       double eps) {
  bool fuse = training && input.dim() >= 2 &&
              ops::batch_norm_relu_elemt_stub.has_kernel(input.device().type);
  for (const Tensor* t :
       std::initializer_list<const Tensor*>{&input, &running_mean, &running_var, &weight, &bias})
    fuse = fuse && (!t->defined() || t->dtype() == kFloat32);
  if (!fuse)
    return batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
        .relu();
  return batch_norm_impl(input, running_mean, running_var, weight, bias, training, momentum, eps,
                         true);
}

}  // namespace functional
}  // namespace weft::nn
