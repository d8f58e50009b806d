// SGD step as torch.optim.SGD (foreach=False). Element loops over the float data; the
// multiply-adds use std::fma because PyTorch's vectorized CPU add(alpha=) does, so that
// results match it bit for bit on machines with FMA (weft is built with -march=native).
#include "weft/optim/sgd.h"

#include <cmath>

#include "weft/ops.h"

namespace weft::optim {

namespace {

void validate(const ParamGroupOptions& o, size_t g) {
  WEFT_CHECK(std::isfinite(o.lr) && o.lr >= 0, "SGD: invalid learning rate ", o.lr, " (group ", g,
             ")");
  WEFT_CHECK(o.momentum >= 0, "SGD: invalid momentum ", o.momentum, " (group ", g, ")");
  WEFT_CHECK(o.weight_decay >= 0, "SGD: invalid weight_decay ", o.weight_decay, " (group ", g, ")");
  WEFT_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
             "SGD: nesterov momentum requires a momentum > 0 and zero dampening (group ", g,
             " has momentum ", o.momentum, ", dampening ", o.dampening, ")");
}

}  // namespace

SGD::SGD(std::vector<Tensor> params, SGDOptions options)
    : Optimizer({ParamGroup{std::move(params), ParamGroupOptions{
                                                   .lr = options.lr,
                                                   .momentum = options.momentum,
                                                   .dampening = options.dampening,
                                                   .nesterov = options.nesterov,
                                                   .weight_decay = options.weight_decay,
                                               }}}) {
  validate(groups_[0].options, 0);
}

void SGD::step() {
  size_t flat = 0;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroupOptions& o = groups_[gi].options;
    // Groups may be added or edited after construction (schedulers, add_param_group).
    validate(o, gi);
    // PyTorch casts each Python-float scalar to float before the kernel; the same here.
    const float wd = (float)o.weight_decay;
    const float mom = (float)o.momentum;
    const float damp1 = (float)(1.0 - o.dampening);
    const float neg_lr = (float)(-o.lr);
    for (const Tensor& p : groups_[gi].params) {
      const size_t i = flat++;
      const Tensor grad = p.grad();
      if (!grad.defined()) continue;
      check_step_tensors(p, grad, i, "SGD");
      float* pd = p.data_ptr<float>();
      const float* gd = grad.data_ptr<float>();
      const int64_t n = p.numel();
      float* buf = nullptr;
      bool first = false;
      if (o.momentum != 0) {
        ParamState& st = state_of(i);
        Tensor* b = st.buffers.find("momentum_buffer");
        if (!b) {
          b = &st.buffers.insert("momentum_buffer", zeros(p.sizes()));
          first = true;
        }
        buf = b->data_ptr<float>();
      }
      for (int64_t j = 0; j < n; ++j) {
        float g = gd[j];
        if (o.weight_decay != 0) g = std::fma(wd, pd[j], g);
        if (buf) {
          // The first step seeds the buffer with the gradient itself, undamped.
          buf[j] = first ? g : std::fma(damp1, g, buf[j] * mom);
          g = o.nesterov ? std::fma(mom, buf[j], g) : buf[j];
        }
        pd[j] = std::fma(neg_lr, g, pd[j]);
      }
    }
  }
}

}  // namespace weft::optim
