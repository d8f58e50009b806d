// Parameter-free activation and regularisation layers: ReLU, Sigmoid, Tanh, Dropout.
#pragma once

#include "weft/nn/functional.h"
#include "weft/nn/module.h"

namespace weft::nn {

class ReLUImpl : public Cloneable<ReLUImpl> {
 public:
  ReLUImpl() : Cloneable("ReLU") {}
  void reset() override {}
  Tensor forward(const Tensor& x) override { return x.relu(); }
};
using ReLU = ModuleHolder<ReLUImpl>;

class SigmoidImpl : public Cloneable<SigmoidImpl> {
 public:
  SigmoidImpl() : Cloneable("Sigmoid") {}
  void reset() override {}
  Tensor forward(const Tensor& x) override { return x.sigmoid(); }
};
using Sigmoid = ModuleHolder<SigmoidImpl>;

class TanhImpl : public Cloneable<TanhImpl> {
 public:
  TanhImpl() : Cloneable("Tanh") {}
  void reset() override {}
  Tensor forward(const Tensor& x) override { return x.tanh(); }
};
using Tanh = ModuleHolder<TanhImpl>;

// Zeroes each element with probability p in training and scales the rest by 1/(1-p).
class DropoutImpl : public Cloneable<DropoutImpl> {
 public:
  explicit DropoutImpl(double p = 0.5) : Cloneable("Dropout"), p(p) {
    WEFT_CHECK(p >= 0.0 && p <= 1.0, "Dropout probability has to be between 0 and 1, got ", p);
  }
  void reset() override {}
  Tensor forward(const Tensor& x) override { return functional::dropout(x, p, training_); }
  std::string extra_repr() const override { return "p=" + std::to_string(p); }
  double p;
};
using Dropout = ModuleHolder<DropoutImpl>;

}  // namespace weft::nn
