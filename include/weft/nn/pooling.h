// Pooling layers over NCHW: MaxPool2d, AvgPool2d (count_include_pad as PyTorch's default)
// and AdaptiveAvgPool2d. Stride defaults to the kernel size, as in PyTorch.
#pragma once

#include <array>

#include "weft/nn/functional.h"
#include "weft/nn/module.h"

namespace weft::nn {

struct PoolOptions {
  std::array<int64_t, 2> stride = {0, 0};  // 0 = kernel size
  std::array<int64_t, 2> padding = {0, 0};
  bool ceil_mode = false;
  bool count_include_pad = true;  // AvgPool2d only
};

class MaxPool2dImpl : public Cloneable<MaxPool2dImpl> {
 public:
  explicit MaxPool2dImpl(int64_t kernel, PoolOptions o = {}) : MaxPool2dImpl({kernel, kernel}, o) {}
  MaxPool2dImpl(std::array<int64_t, 2> kernel, PoolOptions o)
      : Cloneable("MaxPool2d"), kernel(kernel), options(o) {
    if (options.stride[0] == 0) options.stride = kernel;
  }
  void reset() override {}
  Tensor forward(const Tensor& x) override {
    return functional::max_pool2d(x, kernel, options.stride, options.padding, options.ceil_mode);
  }
  std::array<int64_t, 2> kernel;
  PoolOptions options;
};
class MaxPool2d : public ModuleHolder<MaxPool2dImpl> {
 public:
  using ModuleHolder::ModuleHolder;
  explicit MaxPool2d(int64_t kernel, PoolOptions o = {})
      : ModuleHolder(std::make_shared<MaxPool2dImpl>(kernel, o)) {}
};

class AvgPool2dImpl : public Cloneable<AvgPool2dImpl> {
 public:
  explicit AvgPool2dImpl(int64_t kernel, PoolOptions o = {}) : AvgPool2dImpl({kernel, kernel}, o) {}
  AvgPool2dImpl(std::array<int64_t, 2> kernel, PoolOptions o)
      : Cloneable("AvgPool2d"), kernel(kernel), options(o) {
    if (options.stride[0] == 0) options.stride = kernel;
  }
  void reset() override {}
  Tensor forward(const Tensor& x) override {
    return functional::avg_pool2d(x, kernel, options.stride, options.padding, options.ceil_mode,
                                  options.count_include_pad);
  }
  std::array<int64_t, 2> kernel;
  PoolOptions options;
};
class AvgPool2d : public ModuleHolder<AvgPool2dImpl> {
 public:
  using ModuleHolder::ModuleHolder;
  explicit AvgPool2d(int64_t kernel, PoolOptions o = {})
      : ModuleHolder(std::make_shared<AvgPool2dImpl>(kernel, o)) {}
};

class AdaptiveAvgPool2dImpl : public Cloneable<AdaptiveAvgPool2dImpl> {
 public:
  explicit AdaptiveAvgPool2dImpl(int64_t size)
      : AdaptiveAvgPool2dImpl(std::array<int64_t, 2>{size, size}) {}
  explicit AdaptiveAvgPool2dImpl(std::array<int64_t, 2> size)
      : Cloneable("AdaptiveAvgPool2d"), output_size(size) {}
  void reset() override {}
  Tensor forward(const Tensor& x) override {
    return functional::adaptive_avg_pool2d(x, output_size);
  }
  std::array<int64_t, 2> output_size;
};
using AdaptiveAvgPool2d = ModuleHolder<AdaptiveAvgPool2dImpl>;

}  // namespace weft::nn
