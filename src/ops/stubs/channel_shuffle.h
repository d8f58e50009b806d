// The kernel of ChannelShuffle (src/nn/channel_shuffle.cpp; Note [Device dispatch] in
// ops/dispatch.h). Guarantees: values only move, each once.
#pragma once

#include <cstdint>

#include "ops/dispatch.h"
#include "weft/tensor.h"

namespace weft::ops {

// Output channel i*groups + j = input channel j*(C/groups) + i of a float32 (N, C, *) x, groups
// dividing C; a channels-last 4-D x gives a channels-last output, any other a contiguous one.
using ChannelShuffleFn = Tensor (*)(const Tensor& x, int64_t groups);
WEFT_DECLARE_DISPATCH(ChannelShuffleFn, channel_shuffle_stub);

}  // namespace weft::ops
