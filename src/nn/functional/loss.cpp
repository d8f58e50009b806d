// Losses. BCE is composed from differentiable ops, MSE too where the device has no fused kernel;
// cross-entropy is log-softmax + NLL, whose kernels have their own backward, the hot path of
// training. The kernels are the device's (ops/stubs/loss.h; Note [Device dispatch]).
#include "ops/stubs/loss.h"

#include <cmath>

#include "weft/amp/autocast.h"
#include "weft/autograd.h"
#include "weft/nn/functional.h"
#include "weft/ops.h"

namespace weft::nn::functional {

namespace {
Tensor reduce(const Tensor& loss, Reduction r) {
  switch (r) {
    case Reduction::None:
      return loss;
    case Reduction::Sum:
      return loss.sum();
    case Reduction::Mean:
      return loss.mean();
  }
  return loss;
}
void check_same_shape(const Tensor& input, const Tensor& target, const char* op) {
  WEFT_CHECK(input.sizes() == target.sizes(), op, ": target ", shape_str(target.sizes()),
             " must have the same shape as input ", shape_str(input.sizes()));
}

Tensor widen(const Tensor& t) {
  return t.defined() && is_reduced_float(t.dtype()) ? t.to(kFloat32) : t;
}
bool any_reduced(const Tensor& a, const Tensor& b) {
  return is_reduced_float(a.dtype()) || (b.defined() && is_reduced_float(b.dtype()));
}
// Losses compute in float32. With bf16/fp16 operands they run on widened copies; inside autocast
// (where losses are on the float32 list) the loss stays float32, outside it is rounded back to
// the input's dtype once.
template <typename F>
Tensor in_float32(const Tensor& input, const Tensor& target, F f) {
  Tensor out = f(widen(input), widen(target));
  return amp::autocast_active(input) ? out : out.to(input.dtype());
}
}  // namespace

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction r) {
  check_same_shape(input, target, "mse_loss");
  if (any_reduced(input, target))
    return in_float32(input, target,
                      [&](const Tensor& x, const Tensor& y) { return mse_loss(x, y, r); });
  if (r == Reduction::None || input.dtype() != kFloat32 || target.dtype() != kFloat32 ||
      !ops::mse_loss_stub.has_kernel(input.device().type)) {
    Tensor d = input - target;
    return reduce(d * d, r);
  }
  // Mean/sum fused into one pass and one backward node (the loss of overhead-bound steps).
  WEFT_CHECK(input.device() == target.device(), "mse_loss: input on ", input.device(),
             " but target on ", target.device());
  Tensor x = input.detach().contiguous(), y = target.detach().contiguous();
  const int64_t n = x.numel();
  const double s = ops::mse_loss_stub(x.device(), x, y);
  const double scale = r == Reduction::Mean ? 1.0 / (double)n : 1.0;
  Tensor out =
      scalar_tensor(n == 0 && r == Reduction::Mean ? NAN : s * scale, {.device = input.device()});
  bool gi = input.requires_grad(), gt = target.requires_grad();
  autograd::record("MseLossBackward", {&input, &target}, out,
                   [x, y, scale, gi, gt](std::vector<Tensor>& g) {
                     const float k = (float)(2.0 * scale) * g[0].item<float>();
                     Tensor dx = ops::mse_loss_backward_stub(x.device(), x, y, k);
                     return std::vector<Tensor>{gi ? dx : Tensor(), gt ? -dx : Tensor()};
                   },
                   {x, y});
  return out;
}

Tensor binary_cross_entropy(const Tensor& input, const Tensor& target, Reduction r) {
  check_same_shape(input, target, "binary_cross_entropy");
  // PyTorch refuses it under CUDA autocast: in fp16 the log terms lose what the loss is about.
  WEFT_CHECK(!(input.device().is_cuda() && amp::autocast_active(input)),
             "binary_cross_entropy is unsafe to autocast on CUDA: use "
             "binary_cross_entropy_with_logits (BCEWithLogitsLoss), which fuses the sigmoid and is "
             "safe, or compute it outside the autocast region");
  if (any_reduced(input, target))
    return in_float32(input, target, [&](const Tensor& x, const Tensor& y) {
      return binary_cross_entropy(x, y, r);
    });
  if (input.numel() > 0) {  // two reductions and one read (on CUDA: one host synchronisation)
    NoGradGuard ng;
    const std::vector<float> ends = stack({input.max(), -(-input).max()}).to_vector_float();
    const float hi = ends[0], lo = ends[1];
    WEFT_CHECK(lo >= 0.0f && hi <= 1.0f,
               "binary_cross_entropy: all input elements must be in [0, 1], found values in [", lo,
               ", ", hi, "]");
  }
  // PyTorch clamps each log term at -100 so that 0 and 1 inputs give finite losses.
  Tensor l = -(target * input.log().clamp(-100.0, std::nullopt) +
               (1.0 - target) * (1.0 - input).log().clamp(-100.0, std::nullopt));
  return reduce(l, r);
}

Tensor binary_cross_entropy_with_logits(const Tensor& input, const Tensor& target, Reduction r,
                                        const Tensor& pos_weight) {
  check_same_shape(input, target, "binary_cross_entropy_with_logits");
  if (any_reduced(input, target) || any_reduced(input, pos_weight))
    return in_float32(input, target, [&](const Tensor& x, const Tensor& y) {
      return binary_cross_entropy_with_logits(x, y, r, widen(pos_weight));
    });
  // loss = (1 - y) x + (1 + (pw - 1) y) * log(1 + exp(-x)), with a stable log1p(exp(-x)).
  Tensor softplus_neg = (-input).clamp(0.0, std::nullopt) + ((-input.abs()).exp() + 1.0).log();
  Tensor l;
  if (pos_weight.defined()) {
    Tensor lw = (pos_weight - 1.0) * target + 1.0;
    l = (1.0 - target) * input + lw * softplus_neg;
  } else {
    l = (1.0 - target) * input + softplus_neg;
  }
  return reduce(l, r);
}

namespace {
// Counts the samples that are not ignored and checks every class index (on the host).
int64_t count_targets(const Tensor& t, int64_t C, int64_t ignore_index) {
  const int64_t* pt = t.data_ptr<int64_t>();
  int64_t count = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (pt[i] == ignore_index) continue;
    WEFT_CHECK(pt[i] >= 0 && pt[i] < C, "Target ", pt[i], " is out of bounds: ", C,
               " classes (sample ", i, ")");
    ++count;
  }
  return count;
}

ops::LossReduction loss_reduction(Reduction r) {
  switch (r) {
    case Reduction::None:
      return ops::LossReduction::None;
    case Reduction::Sum:
      return ops::LossReduction::Sum;
    case Reduction::Mean:
      return ops::LossReduction::Mean;
  }
  return ops::LossReduction::Mean;
}
}  // namespace

Tensor nll_loss(const Tensor& log_probs, const Tensor& target, Reduction r, int64_t ignore_index) {
  WEFT_CHECK(log_probs.dim() == 1 || log_probs.dim() == 2,
             "nll_loss expects input [N, C] or [C], got ", log_probs.str());
  WEFT_CHECK(target.dtype() == kInt64, "nll_loss: target must be int64 class indices, got ",
             target.str());
  if (is_reduced_float(log_probs.dtype()))
    return in_float32(log_probs, target, [&](const Tensor& x, const Tensor& t) {
      return nll_loss(x, t, r, ignore_index);
    });
  Tensor lp = log_probs.dim() == 1 ? log_probs.unsqueeze(0) : log_probs;
  Tensor tg = target.dim() == 0 ? target.reshape({1}) : target;
  const int64_t N = lp.size(0), C = lp.size(1);
  WEFT_CHECK(tg.dim() == 1 && tg.size(0) == N, "nll_loss: target ", shape_str(target.sizes()),
             " does not match input ", shape_str(log_probs.sizes()), " (batch ", N, ")");
  Tensor t = tg.contiguous();
  // The class indices are checked on the host.
  const int64_t count =
      count_targets(t.device().is_cpu() ? t : t.to(Device::CPU()), C, ignore_index);
  const ops::LossReduction red = loss_reduction(r);
  Tensor out = ops::nll_loss_stub(lp.device(), lp, t, ignore_index, red, count);
  if (r == Reduction::None && log_probs.dim() == 1) out = out.reshape({});
  Shape in_shape = log_probs.sizes();
  autograd::record(
      "NllLossBackward", {&log_probs}, out,
      [t, C, red, count, ignore_index, in_shape](std::vector<Tensor>& g) {
        return std::vector<Tensor>{
            ops::nll_loss_backward_stub(g[0].device(), g[0], t, C, ignore_index, red, count)
                .view(in_shape)};
      },
      {t});
  return out;
}

Tensor cross_entropy(const Tensor& input, const Tensor& target, Reduction r, int64_t ignore_index) {
  if (any_reduced(input, target))
    return in_float32(input, target, [&](const Tensor& x, const Tensor& t) {
      return cross_entropy(x, t, r, ignore_index);
    });
  WEFT_CHECK(input.dim() == 1 || input.dim() == 2,
             "cross_entropy expects logits [N, C] or [C], got ", input.str());
  return nll_loss(input.log_softmax(-1), target, r, ignore_index);
}

Tensor dropout(const Tensor& input, double p, bool training, Generator* gen) {
  WEFT_CHECK(p >= 0.0 && p <= 1.0, "dropout probability has to be between 0 and 1, got ", p);
  if (!training || p == 0.0) return input;
  if (p == 1.0) return input * 0.0;
  // The mask is drawn on the host from the CPU generator (the same draws on every device).
  Tensor mask;
  {
    DeviceGuard on_host(input.device().is_cuda() ? Device::CPU() : current_device());
    mask = rand(input.sizes(), gen);
  }
  float* pm = mask.data_ptr<float>();
  const float keep = (float)(1.0 - p), scale = 1.0f / keep;
  for (int64_t i = 0; i < mask.numel(); ++i) pm[i] = pm[i] < keep ? scale : 0.0f;
  return (input * mask.to(input.device())).to(input.dtype());  // bf16 * float32 mask is float32
}

}  // namespace weft::nn::functional
