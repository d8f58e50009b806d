// SGD step as torch.optim.SGD (foreach=False): the parameters of each group that have a
// gradient are stepped together per device by the device's kernel (ops/stubs/optim.h; Note
// [Device dispatch]), the same update per element on every device.
#include "weft/optim/sgd.h"

#include <cmath>

#include "ops/stubs/optim.h"
#include "weft/ops.h"

namespace weft::optim {

namespace {

// The parameters of one step call on one device, first step of their momentum or not.
struct SGDList {
  Device device;
  bool first;
  std::vector<Tensor> params, grads, bufs;
};

SGDList& list_for(std::vector<SGDList>& lists, Device device, bool first) {
  for (SGDList& l : lists)
    if (l.device == device && l.first == first) return l;
  return lists.emplace_back(SGDList{device, first, {}, {}, {}});
}

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
    std::vector<SGDList> lists;
    for (const Tensor& p : groups_[gi].params) {
      const size_t i = flat++;
      const Tensor grad = p.grad();
      if (!grad.defined()) continue;
      check_step_tensors(p, grad, i, "SGD");
      p.bump_version();  // updated in place below: graphs that saved it must not reuse it
      Tensor buf_t;
      bool first = false;
      if (o.momentum != 0) {
        ParamState& st = state_of(i);
        Tensor* b = st.buffers.find("momentum_buffer");
        if (!b) {
          b = &st.buffers.insert("momentum_buffer", zeros(p.sizes(), {.device = p.device()}));
          first = true;
        }
        buf_t = *b;
      }
      SGDList& l = list_for(lists, p.device(), first);
      l.params.push_back(p);
      l.grads.push_back(grad);
      if (buf_t.defined()) l.bufs.push_back(buf_t);
    }
    for (const SGDList& l : lists) {
      const ops::SGDStep k{wd,      mom,       damp1, neg_lr, o.weight_decay != 0, o.momentum != 0,
                           l.first, o.nesterov};
      ops::sgd_step_stub(l.device, l.params, l.grads, l.bufs, k);
    }
  }
}

}  // namespace weft::optim
