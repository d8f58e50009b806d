// Adam/AdamW step as torch.optim's _single_tensor_adam(w) (foreach=False): moments and the
// update in float, bias corrections in double (Python floats there). The parameters of each
// group that have a gradient are stepped together per device by the device's kernel
// (ops/stubs/optim.h; Note [Device dispatch]), the same update per element on every device.
#include "weft/optim/adam.h"

#include <cmath>

#include "ops/stubs/optim.h"
#include "weft/ops.h"

namespace weft::optim {

namespace {

// The parameters of one step call on one device, with their state and bias corrections.
struct AdamList {
  Device device;
  std::vector<Tensor> p, g, m, v, vmax;
  std::vector<float> neg_step_size, bc2_sqrt;
};

AdamList& list_for(std::vector<AdamList>& lists, Device device) {
  for (AdamList& l : lists)
    if (l.device == device) return l;
  return lists.emplace_back(AdamList{device, {}, {}, {}, {}, {}, {}, {}});
}

// The group's per-element constants, each Python float cast to float as PyTorch's kernels do.
ops::AdamStep step_constants(const ParamGroupOptions& o, bool decoupled) {
  return ops::AdamStep{.b1 = (float)o.beta1,
                       .b2 = (float)o.beta2,
                       .one_minus_b1 = (float)(1.0 - o.beta1),
                       .one_minus_b2 = (float)(1.0 - o.beta2),
                       .wd = (float)o.weight_decay,
                       .eps = (float)o.eps,
                       .decay = (float)(1.0 - o.lr * o.weight_decay),  // AdamW's p *= 1 - lr*wd
                       .l2 = !decoupled && o.weight_decay != 0,
                       .decoupled = decoupled && o.weight_decay != 0,
                       .amsgrad = o.amsgrad};
}

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
    std::vector<AdamList> lists;
    for (const Tensor& p : groups_[gi].params) {
      const size_t i = flat++;
      const Tensor grad = p.grad();
      if (!grad.defined()) continue;
      check_step_tensors(p, grad, i, who);
      p.bump_version();  // updated in place below: graphs that saved it must not reuse it
      ParamState& st = state_of(i);
      auto buffer = [&](const char* name) {
        Tensor* b = st.buffers.find(name);
        if (!b) b = &st.buffers.insert(name, zeros(p.sizes(), {.device = p.device()}));
        return *b;
      };
      AdamList& l = list_for(lists, p.device());
      l.p.push_back(p);
      l.g.push_back(grad);
      l.m.push_back(buffer("exp_avg"));
      l.v.push_back(buffer("exp_avg_sq"));
      if (o.amsgrad) l.vmax.push_back(buffer("max_exp_avg_sq"));
      const int64_t t = ++st.step;
      const double bc1 = 1.0 - std::pow(o.beta1, (double)t);
      const double bc2 = 1.0 - std::pow(o.beta2, (double)t);
      l.neg_step_size.push_back((float)(-(o.lr / bc1)));
      l.bc2_sqrt.push_back((float)std::sqrt(bc2));
    }
    const ops::AdamStep k = step_constants(o, decoupled_);
    for (const AdamList& l : lists)
      ops::adam_step_stub(l.device, l.p, l.g, l.m, l.v, l.vmax, l.neg_step_size, l.bc2_sqrt, k);
  }
}

}  // namespace weft::optim
