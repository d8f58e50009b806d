// ShuffleNet-V2-style building blocks and a small network for 28x28 images (the model zoo
// of weft-train). The unit splits channels in two, transforms one half with 1x1 conv,
// depthwise 3x3 conv (groups = channels) and 1x1 conv, each with BatchNorm, concatenates,
// and shuffles the channels so the halves mix in the next unit. Children live in the
// registry (Sequential), so convert_sync_batchnorm and DataParallel replicas reach them.
#pragma once

#include "weft/nn.h"

namespace weft::models {

// in_channels -> out_channels; stride 2 halves the spatial size (both branches then
// transform the full input, as ShuffleNet V2's downsampling unit).
class ShuffleUnitImpl : public nn::Cloneable<ShuffleUnitImpl> {
 public:
  ShuffleUnitImpl(int64_t in_channels, int64_t out_channels, int64_t stride);
  void reset() override;
  Tensor forward(const Tensor& x) override;
  int64_t in_channels, out_channels, stride;

 private:
  std::shared_ptr<nn::SequentialImpl> branch_main_, branch_proj_;
  std::shared_ptr<nn::ChannelShuffleImpl> shuffle_;
};
using ShuffleUnit = nn::ModuleHolder<ShuffleUnitImpl>;

// Stem conv 1->24 (28x28), units 24->48 (stride 2, 14x14), 48->48, 48->96 (stride 2, 7x7),
// 96->96, 1x1 conv to 192, global average pool, Linear to num_classes.
nn::Sequential shufflenet_small(int64_t num_classes = 10);
// A plain CNN: two conv-BN-ReLU-maxpool stages (32, 64 channels), Linear 3136->128, ReLU,
// Dropout(dropout) (none when 0), Linear 128->num_classes. The default model of weft-train
// (which builds it without dropout: bench/README.md, "Main job recipe").
nn::Sequential simple_cnn(int64_t num_classes = 10, double dropout = 0.25);
// An MLP 784-256-128-num_classes.
nn::Sequential mlp(int64_t num_classes = 10);

}  // namespace weft::models
