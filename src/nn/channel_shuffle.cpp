// ChannelShuffle: the op (argument checks, the inverse shuffle as its backward) and the module;
// the kernel is the device's (ops/stubs/channel_shuffle.h; Note [Device dispatch]).
#include "weft/nn/channel_shuffle.h"

#include "ops/stubs/channel_shuffle.h"
#include "weft/autograd.h"
#include "weft/ops.h"

namespace weft::nn {

Tensor to_channels_last(const Tensor& t) {
  WEFT_CHECK(t.dim() == 4, "to_channels_last expects a 4-D tensor, got ", t.str());
  // NHWC storage viewed back as NCHW: permute a contiguous NHWC tensor.
  Tensor nhwc = t.permute({0, 2, 3, 1}).contiguous();
  return nhwc.permute({0, 3, 1, 2});
}

namespace {
// The device's kernel (ops/stubs/channel_shuffle.h; Note [Device dispatch]).
Tensor shuffle(const Tensor& x, int64_t groups) {
  return ops::channel_shuffle_stub(x.device(), x, groups);
}

// Integer inputs (arange gives int64; PyTorch shuffles any dtype): PyTorch's reference form,
// [N, g, C/g, *] transposed to [N, C/g, g, *], on any device. Nothing to differentiate.
Tensor shuffle_by_views(const Tensor& x, int64_t groups) {
  const Shape& s = x.sizes();
  Shape split = {s[0], groups, s[1] / groups};
  split.insert(split.end(), s.begin() + 2, s.end());
  Tensor out = x.reshape(split).transpose(1, 2).contiguous().view(s);
  return is_channels_last(x) ? to_channels_last(out) : out;
}
}  // namespace

namespace functional {

Tensor channel_shuffle(const Tensor& input, int64_t groups) {
  WEFT_CHECK(input.dim() >= 3, "channel_shuffle expects an input of rank >= 3 [N, C, *], got ",
             input.str());
  WEFT_CHECK(groups > 0, "channel_shuffle: groups must be positive, got ", groups);
  const int64_t C = input.size(1);
  WEFT_CHECK(C % groups == 0, "channel_shuffle: number of channels ", C,
             " must be divisible by groups ", groups);
  if (!is_floating_point(input.dtype())) return shuffle_by_views(input, groups);
  if (is_reduced_float(input.dtype()))  // exact: the values only move
    return channel_shuffle(input.to(kFloat32), groups).to(input.dtype());
  Tensor out = shuffle(input, groups);
  // The inverse of shuffling with g groups is shuffling with C/g groups.
  autograd::record("ChannelShuffleBackward", {&input}, out, [groups, C](std::vector<Tensor>& g) {
    return std::vector<Tensor>{shuffle(g[0], C / groups)};
  });
  return out;
}

}  // namespace functional

ChannelShuffleImpl::ChannelShuffleImpl(int64_t groups)
    : Cloneable("ChannelShuffle"), groups(groups) {
  WEFT_CHECK(groups > 0, "ChannelShuffle: groups must be positive, got ", groups);
}

}  // namespace weft::nn
