// Loss modules (MSELoss, BCELoss, BCEWithLogitsLoss, CrossEntropyLoss): thin, stateless
// wrappers over nn::functional with PyTorch's reduction argument.
#pragma once

#include "weft/nn/functional.h"
#include "weft/nn/module.h"

namespace weft::nn {

using functional::Reduction;

class LossImpl : public Module {
 public:
  LossImpl(const char* name, Reduction r) : Module(name), reduction(r) {}
  virtual Tensor forward(const Tensor& input, const Tensor& target) = 0;
  std::vector<Tensor> forward_multi(const std::vector<Tensor>& in) override {
    WEFT_CHECK(in.size() == 2, type_name_, " takes (input, target), got ", in.size(), " tensors");
    return {forward(in[0], in[1])};
  }
  Reduction reduction;
};

class MSELossImpl : public LossImpl {
 public:
  explicit MSELossImpl(Reduction r = Reduction::Mean) : LossImpl("MSELoss", r) {}
  Tensor forward(const Tensor& x, const Tensor& y) override {
    return functional::mse_loss(x, y, reduction);
  }
};
class BCELossImpl : public LossImpl {
 public:
  explicit BCELossImpl(Reduction r = Reduction::Mean) : LossImpl("BCELoss", r) {}
  Tensor forward(const Tensor& x, const Tensor& y) override {
    return functional::binary_cross_entropy(x, y, reduction);
  }
};
class BCEWithLogitsLossImpl : public LossImpl {
 public:
  explicit BCEWithLogitsLossImpl(Reduction r = Reduction::Mean, Tensor pos_weight = Tensor())
      : LossImpl("BCEWithLogitsLoss", r), pos_weight(std::move(pos_weight)) {}
  Tensor forward(const Tensor& x, const Tensor& y) override {
    return functional::binary_cross_entropy_with_logits(x, y, reduction, pos_weight);
  }
  Tensor pos_weight;
};
class CrossEntropyLossImpl : public LossImpl {
 public:
  explicit CrossEntropyLossImpl(Reduction r = Reduction::Mean, int64_t ignore_index = -100)
      : LossImpl("CrossEntropyLoss", r), ignore_index(ignore_index) {}
  Tensor forward(const Tensor& x, const Tensor& y) override {
    return functional::cross_entropy(x, y, reduction, ignore_index);
  }
  int64_t ignore_index;
};

using MSELoss = ModuleHolder<MSELossImpl>;
using BCELoss = ModuleHolder<BCELossImpl>;
using BCEWithLogitsLoss = ModuleHolder<BCEWithLogitsLossImpl>;
using CrossEntropyLoss = ModuleHolder<CrossEntropyLossImpl>;

}  // namespace weft::nn
