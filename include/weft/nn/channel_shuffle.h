// ChannelShuffle (ShuffleNet): splits C channels into `groups` and interleaves them, i.e.
// out channel i*groups + j = in channel j*(C/groups) + i. Works on any input of rank >= 3
// (dim 1 = channels), keeps channels-last inputs channels-last, and runs as plain memcpy
// of contiguous runs so it moves data at copy bandwidth. Backward is the inverse shuffle.
// Every dtype is accepted, as in PyTorch: int64 (torch.arange's) moves through views.
#pragma once

#include "weft/nn/module.h"

namespace weft::nn {

namespace functional {
Tensor channel_shuffle(const Tensor& input, int64_t groups);
}

class ChannelShuffleImpl : public Cloneable<ChannelShuffleImpl> {
 public:
  explicit ChannelShuffleImpl(int64_t groups);
  void reset() override {}
  Tensor forward(const Tensor& input) override {
    return functional::channel_shuffle(input, groups);
  }
  std::string extra_repr() const override { return "groups=" + std::to_string(groups); }
  int64_t groups;
};
using ChannelShuffle = ModuleHolder<ChannelShuffleImpl>;

using weft::is_channels_last;  // declared with the tensor (weft/tensor.h)
// A channels-last copy of a rank-4 tensor (same logical NCHW shape, NHWC memory).
Tensor to_channels_last(const Tensor& t);

}  // namespace weft::nn
