// Adam (L2 weight decay added to the gradient) and AdamW (decoupled weight decay), with
// amsgrad, matching torch.optim's update including where eps enters. `Adam opt(params, 1e-3)` is
// libtorch's Adam(params, AdamOptions(lr)).
#pragma once

#include "weft/optim/optimizer.h"

namespace weft::optim {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool amsgrad = false;
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, AdamOptions options);
  // Just the learning rate. A number, not a braced list: Adam(params, {}) keeps the options.
  template <LearningRate L>
  Adam(std::vector<Tensor> params, L lr) : Adam(std::move(params), AdamOptions{.lr = double(lr)}) {}
  Adam(std::vector<ParamGroup> groups, bool decoupled = false)
      : Optimizer(std::move(groups)), decoupled_(decoupled) {}
  void step() override;

 protected:
  bool decoupled_ = false;
};

// AdamW's default weight_decay is 1e-2, as in PyTorch.
class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, AdamOptions options = {.weight_decay = 1e-2});
  template <LearningRate L>
  AdamW(std::vector<Tensor> params, L lr)
      : AdamW(std::move(params), AdamOptions{.lr = double(lr), .weight_decay = 1e-2}) {}
};

}  // namespace weft::optim
