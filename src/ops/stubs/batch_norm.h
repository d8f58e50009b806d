// The kernels of batch normalisation over [N, C, *] inputs, split as PyTorch's native
// batch_norm_stats / elemt / backward_reduce / backward_elemt so that SyncBatchNorm can put a
// collective between them (src/nn/functional/batch_norm.cpp; Note [Device dispatch] in
// ops/dispatch.h). Guarantees: per-channel tensors are float32 [C]; statistics and reductions
// accumulate in double, in the same formulas on every device.
#pragma once

#include <utility>

#include "ops/dispatch.h"
#include "weft/tensor.h"

namespace weft::ops {

// Per-channel mean and biased variance of x.
using BatchNormStatsFn = std::pair<Tensor, Tensor> (*)(const Tensor& x);
WEFT_DECLARE_DISPATCH(BatchNormStatsFn, batch_norm_stats_stub);
// y = (x - mean) * invstd * weight + bias in x's dtype; weight and bias may be undefined.
using BatchNormElemtFn = Tensor (*)(const Tensor& x, const Tensor& mean, const Tensor& invstd,
                                    const Tensor& weight, const Tensor& bias);
WEFT_DECLARE_DISPATCH(BatchNormElemtFn, batch_norm_elemt_stub);
// Per-channel sum(dy) and sum(dy * (x - mean)).
using BatchNormBackwardReduceFn = std::pair<Tensor, Tensor> (*)(const Tensor& dy, const Tensor& x,
                                                                const Tensor& mean);
WEFT_DECLARE_DISPATCH(BatchNormBackwardReduceFn, batch_norm_backward_reduce_stub);

// The last two take the element count per channel either on the host (`count`, with
// `device_count` undefined) or, for SyncBatchNorm on CUDA, as an int64 [1] tensor on the
// statistics' device (`device_count`) that the kernels read, so that the host never waits for
// it. Kernels of devices that keep counts on the host refuse a device_count.
//
// dx for training mode given the (possibly all-reduced) sums.
using BatchNormBackwardElemtFn = Tensor (*)(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                            const Tensor& invstd, const Tensor& weight,
                                            const Tensor& sum_dy, const Tensor& sum_dy_xmu,
                                            const Tensor& device_count, int64_t count);
WEFT_DECLARE_DISPATCH(BatchNormBackwardElemtFn, batch_norm_backward_elemt_stub);
// Training-mode batch norm followed by ReLU (Note [BatchNorm-ReLU fusion]), CPU only, float32:
// relu(batch_norm_elemt(x, ...)) in one pass over x.
WEFT_DECLARE_DISPATCH(BatchNormElemtFn, batch_norm_relu_elemt_stub);
// Its backward from g = dL/d(output): the ReLU's mask is recomputed from x and the same
// per-channel affine, never read from a saved output. dx, and per channel sum(g') and
// sum(g' * (x - mean)) of the masked g' (the weight's and bias' gradients need them).
struct BatchNormReluGrads {
  Tensor dx, sum_dy, sum_dy_xmu;
};
using BatchNormReluBackwardFn = BatchNormReluGrads (*)(const Tensor& g, const Tensor& x,
                                                       const Tensor& mean, const Tensor& invstd,
                                                       const Tensor& weight, const Tensor& bias,
                                                       int64_t count);
WEFT_DECLARE_DISPATCH(BatchNormReluBackwardFn, batch_norm_relu_backward_stub);
// running = (1 - momentum) * running + momentum * batch (var made unbiased with the count).
using UpdateRunningStatsFn = void (*)(const Tensor& running_mean, const Tensor& running_var,
                                      const Tensor& mean, const Tensor& var,
                                      const Tensor& device_count, int64_t count, double momentum);
WEFT_DECLARE_DISPATCH(UpdateRunningStatsFn, update_running_stats_stub);

// SyncBatchNorm's combination of R replicas' statistics from the all-gathered contiguous float32
// rows [R, 2 + 2C], each [count_hi, count_lo, mean[C], biased var[C]] with count = count_hi *
// 2^24 + count_lo: Chan et al.'s pairwise formula in double, in rank order, replicas with count 0
// skipped. The union's mean and biased variance ([C]; 0 where every count is 0) and its count:
// on the host (`count`), or on the device (`device_count`, int64 [1]; `count` -1).
struct BatchNormGathered {
  Tensor mean, var;
  int64_t count = -1;
  Tensor device_count;
};
using BatchNormGatherStatsFn = BatchNormGathered (*)(const Tensor& rows);
WEFT_DECLARE_DISPATCH(BatchNormGatherStatsFn, batch_norm_gather_stats_stub);

// Capability: whether the kernels take an x (and dy) of the 16-bit `dtype` with float32
// per-channel tensors as they are. Where not, batch norm runs on float32 copies.
using BatchNormReducedNativeFn = bool (*)(DType dtype);
WEFT_DECLARE_DISPATCH(BatchNormReducedNativeFn, batch_norm_reduced_native_stub);

}  // namespace weft::ops
