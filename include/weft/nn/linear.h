// Linear (y = x W^T + b), Identity and Flatten, with PyTorch's default initialisation:
// W, b ~ U(-1/sqrt(in_features), 1/sqrt(in_features)).
#pragma once

#include "weft/nn/module.h"

namespace weft::nn {

class LinearImpl : public Cloneable<LinearImpl> {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
  void reset() override;
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;
  int64_t in_features, out_features;
  bool has_bias;
  Tensor weight, bias;
};
using Linear = ModuleHolder<LinearImpl>;

class IdentityImpl : public Cloneable<IdentityImpl> {
 public:
  IdentityImpl() : Cloneable("Identity") {}
  void reset() override {}
  Tensor forward(const Tensor& input) override { return input; }
};
using Identity = ModuleHolder<IdentityImpl>;

class FlattenImpl : public Cloneable<FlattenImpl> {
 public:
  explicit FlattenImpl(int64_t start_dim = 1, int64_t end_dim = -1)
      : Cloneable("Flatten"), start_dim(start_dim), end_dim(end_dim) {}
  void reset() override {}
  Tensor forward(const Tensor& input) override { return input.flatten(start_dim, end_dim); }
  int64_t start_dim, end_dim;
};
using Flatten = ModuleHolder<FlattenImpl>;

}  // namespace weft::nn
