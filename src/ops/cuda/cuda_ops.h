// Internal: the CUDA backend's ops as the device-independent code calls them (declared without
// CUDA headers, defined in src/ops/cuda/*.cu and blas.cpp). Each takes tensors on one CUDA
// device, queues its kernels on that device's current stream and returns without waiting;
// autograd stays with the callers, which dispatch here when their inputs are on CUDA.
#pragma once

#include <utility>
#include <vector>

#include "weft/tensor.h"

namespace weft::cuda {

// --- nn ---
// ChannelShuffle of a contiguous (N, C, *) tensor or a channels-last 4-D one (layout kept).
Tensor channel_shuffle(const Tensor& x, int64_t groups);

}  // namespace weft::cuda
