// Adam/AdamW step as torch.optim's _single_tensor_adam(w) (foreach=False): moments and the
// update in float, bias corrections in double (Python floats there). The multiply-adds use
// std::fma where PyTorch's vectorized CPU add/addcmul do, to match it bit for bit.
#include "weft/optim/adam.h"

#include <cmath>

#include "weft/ops.h"

namespace weft::optim {

namespace {

void validate(const ParamGroupOptions& o, size_t g, const char* who) {
  WEFT_CHECK(std::isfinite(o.lr) && o.lr >= 0, who, ": invalid learning rate ", o.lr, " (group ", g,
             ")");
  WEFT_CHECK(o.eps >= 0, who, ": invalid eps ", o.eps, " (group ", g, ")");
  WEFT_CHECK(o.beta1 >= 0 && o.beta1 < 1, who, ": invalid beta1 ", o.beta1, " (group ", g, ")");
  WEFT_CHECK(o.beta2 >= 0 && o.beta2 < 1, who, ": invalid beta2 ", o.beta2, " (group ", g, ")");
  WEFT_CHECK(o.weight_decay >= 0, who, ": invalid weight_decay ", o.weight_decay, " (group ", g,
             ")");
}

ParamGroup make_group(std::vector<Tensor> params, const AdamOptions& a) {
  return ParamGroup{std::move(params), ParamGroupOptions{.lr = a.lr,
                                                         .weight_decay = a.weight_decay,
                                                         .beta1 = a.beta1,
                                                         .beta2 = a.beta2,
                                                         .eps = a.eps,
                                                         .amsgrad = a.amsgrad}};
}

}  // namespace

Adam::Adam(std::vector<Tensor> params, AdamOptions options)
    : Optimizer({make_group(std::move(params), options)}) {
  validate(groups_[0].options, 0, "Adam");
}

AdamW::AdamW(std::vector<Tensor> params, AdamOptions options)
    : Adam(std::vector<ParamGroup>{make_group(std::move(params), options)}, true) {
  validate(groups_[0].options, 0, "AdamW");
}

void Adam::step() {
  const char* who = decoupled_ ? "AdamW" : "Adam";
  size_t flat = 0;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroupOptions& o = groups_[gi].options;
    validate(o, gi, who);
    const float b1 = (float)o.beta1, b2 = (float)o.beta2;
    const float one_minus_b1 = (float)(1.0 - o.beta1), one_minus_b2 = (float)(1.0 - o.beta2);
    const float wd = (float)o.weight_decay;
    const float eps = (float)o.eps;
    const float decay = (float)(1.0 - o.lr * o.weight_decay);  // AdamW's p *= 1 - lr*wd
    const bool l2 = !decoupled_ && o.weight_decay != 0;
    const bool decay_p = decoupled_ && o.weight_decay != 0;
    for (const Tensor& p : groups_[gi].params) {
      const size_t i = flat++;
      const Tensor grad = p.grad();
      if (!grad.defined()) continue;
      check_step_tensors(p, grad, i, who);
      ParamState& st = state_of(i);
      auto buffer = [&](const char* name) {
        Tensor* b = st.buffers.find(name);
        if (!b) b = &st.buffers.insert(name, zeros(p.sizes()));
        return b->data_ptr<float>();
      };
      float* m = buffer("exp_avg");
      float* v = buffer("exp_avg_sq");
      float* vmax = o.amsgrad ? buffer("max_exp_avg_sq") : nullptr;
      const int64_t t = ++st.step;
      const double bc1 = 1.0 - std::pow(o.beta1, (double)t);
      const double bc2 = 1.0 - std::pow(o.beta2, (double)t);
      const float neg_step_size = (float)(-(o.lr / bc1));
      const float bc2_sqrt = (float)std::sqrt(bc2);
      float* pd = p.data_ptr<float>();
      const float* gd = grad.data_ptr<float>();
      const int64_t n = p.numel();
      for (int64_t j = 0; j < n; ++j) {
        float g = gd[j];
        if (l2) g = std::fma(wd, pd[j], g);
        if (decay_p) pd[j] = pd[j] * decay;
        m[j] = std::fma(one_minus_b1, g, m[j] * b1);
        v[j] = std::fma(one_minus_b2 * g, g, v[j] * b2);
        float s = v[j];
        if (vmax) {
          // torch.maximum propagates NaN from either side.
          if (s > vmax[j] || std::isnan(s)) vmax[j] = s;
          s = vmax[j];
        }
        const float denom = std::sqrt(s) / bc2_sqrt + eps;
        pd[j] = pd[j] + (neg_step_size * m[j]) / denom;
      }
    }
  }
}

}  // namespace weft::optim
