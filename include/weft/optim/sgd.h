// SGD with momentum, dampening, Nesterov and (L2) weight decay, exactly as torch.optim.SGD:
// the first step seeds the momentum buffer with the gradient, undamped. `SGD opt(params, 0.01)`
// is libtorch's SGD(params, SGDOptions(lr)).
#pragma once

#include "weft/optim/optimizer.h"

namespace weft::optim {

struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, SGDOptions options);
  // Just the learning rate. A number, not a braced list: SGD(params, {}) keeps the options.
  template <LearningRate L>
  SGD(std::vector<Tensor> params, L lr) : SGD(std::move(params), SGDOptions{.lr = double(lr)}) {}
  SGD(std::vector<ParamGroup> groups) : Optimizer(std::move(groups)) {}
  void step() override;
};

}  // namespace weft::optim
