#include "weft/models/shufflenet.h"

#include "weft/ops.h"

namespace weft::models {

using nn::BatchNorm2d;
using nn::Conv2d;
using nn::ReLU;

ShuffleUnitImpl::ShuffleUnitImpl(int64_t in, int64_t out, int64_t s)
    : Cloneable("ShuffleUnit"), in_channels(in), out_channels(out), stride(s) {
  WEFT_CHECK(s == 1 || s == 2, "ShuffleUnit: stride must be 1 or 2, got ", s);
  WEFT_CHECK(out % 2 == 0, "ShuffleUnit: out_channels must be even, got ", out);
  WEFT_CHECK(s == 2 || in == out, "ShuffleUnit: a stride-1 unit keeps the channel count (", in,
             " vs ", out, ")");
  reset();
}

void ShuffleUnitImpl::reset() {
  const int64_t half = out_channels / 2;
  const int64_t main_in = stride == 1 ? in_channels / 2 : in_channels;
  branch_main_ = register_module(
      "branch_main",
      std::make_shared<nn::SequentialImpl>(std::initializer_list<std::shared_ptr<nn::Module>>{
          Conv2d(main_in, half, 1, {.bias = false}), BatchNorm2d(half), ReLU(),
          Conv2d(half, half, 3,
                 {.stride = {stride, stride}, .padding = {1, 1}, .groups = half, .bias = false}),
          BatchNorm2d(half), Conv2d(half, half, 1, {.bias = false}), BatchNorm2d(half), ReLU()}));
  if (stride == 2) {
    branch_proj_ = register_module(
        "branch_proj",
        std::make_shared<nn::SequentialImpl>(std::initializer_list<std::shared_ptr<nn::Module>>{
            Conv2d(in_channels, in_channels, 3,
                   {.stride = {2, 2}, .padding = {1, 1}, .groups = in_channels, .bias = false}),
            BatchNorm2d(in_channels), Conv2d(in_channels, half, 1, {.bias = false}),
            BatchNorm2d(half), ReLU()}));
  } else {
    branch_proj_ = nullptr;
  }
  shuffle_ = register_module("shuffle", std::make_shared<nn::ChannelShuffleImpl>(2));
}

Tensor ShuffleUnitImpl::forward(const Tensor& x) {
  WEFT_CHECK(x.dim() == 4 && x.size(1) == in_channels, "ShuffleUnit expects [N, ", in_channels,
             ", H, W], got ", x.str());
  Tensor y;
  if (stride == 1) {
    auto halves = x.chunk(2, 1);
    y = cat({halves[0], branch_main_->forward(halves[1])}, 1);
  } else {
    y = cat({branch_proj_->forward(x), branch_main_->forward(x)}, 1);
  }
  return shuffle_->forward(y);
}

nn::Sequential shufflenet_small(int64_t num_classes) {
  return nn::Sequential({Conv2d(1, 24, 3, {.padding = {1, 1}, .bias = false}), BatchNorm2d(24),
                         ReLU(), ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1),
                         ShuffleUnit(48, 96, 2), ShuffleUnit(96, 96, 1),
                         Conv2d(96, 192, 1, {.bias = false}), BatchNorm2d(192), ReLU(),
                         nn::AdaptiveAvgPool2d(1), nn::Flatten(), nn::Linear(192, num_classes)});
}

nn::Sequential simple_cnn(int64_t num_classes, double dropout) {
  WEFT_CHECK(dropout >= 0 && dropout < 1, "simple_cnn: dropout must be in [0, 1), got ", dropout);
  nn::Sequential net({Conv2d(1, 32, 3, {.padding = {1, 1}}), BatchNorm2d(32), ReLU(),
                      nn::MaxPool2d(2), Conv2d(32, 64, 3, {.padding = {1, 1}}), BatchNorm2d(64),
                      ReLU(), nn::MaxPool2d(2), nn::Flatten(), nn::Linear(64 * 7 * 7, 128),
                      ReLU()});
  if (dropout > 0) net->push_back(nn::Dropout(dropout));
  net->push_back(nn::Linear(128, num_classes));
  return net;
}

nn::Sequential mlp(int64_t num_classes) {
  return nn::Sequential({nn::Flatten(), nn::Linear(784, 256), ReLU(), nn::Linear(256, 128), ReLU(),
                         nn::Linear(128, num_classes)});
}

}  // namespace weft::models
