// Conv2d over NCHW with stride, padding, dilation, groups and optional bias; PyTorch's
// default initialisation (kaiming_uniform a=sqrt(5), bias U(+-1/sqrt(fan_in))).
#pragma once

#include <array>

#include "weft/nn/module.h"

namespace weft::nn {

struct Conv2dOptions {
  std::array<int64_t, 2> stride = {1, 1};
  std::array<int64_t, 2> padding = {0, 0};
  std::array<int64_t, 2> dilation = {1, 1};
  int64_t groups = 1;
  bool bias = true;
};

class Conv2dImpl : public Cloneable<Conv2dImpl> {
 public:
  Conv2dImpl(int64_t in_channels, int64_t out_channels, std::array<int64_t, 2> kernel_size,
             Conv2dOptions options = {});
  Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size,
             Conv2dOptions options = {})
      : Conv2dImpl(in_channels, out_channels, {kernel_size, kernel_size}, options) {}
  void reset() override;
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;
  int64_t in_channels, out_channels;
  std::array<int64_t, 2> kernel_size;
  Conv2dOptions options;
  Tensor weight, bias;
};
// Options are taken as a real parameter so that designated initialisers work:
// Conv2d(3, 8, 3, {.padding = {1, 1}}).
class Conv2d : public ModuleHolder<Conv2dImpl> {
 public:
  using ModuleHolder::ModuleHolder;
  Conv2d(int64_t in, int64_t out, int64_t kernel, Conv2dOptions o = {})
      : ModuleHolder(std::make_shared<Conv2dImpl>(in, out, kernel, o)) {}
  Conv2d(int64_t in, int64_t out, std::array<int64_t, 2> kernel, Conv2dOptions o = {})
      : ModuleHolder(std::make_shared<Conv2dImpl>(in, out, kernel, o)) {}
};

}  // namespace weft::nn
