// The kernels of the optimizers' steps (src/optim/sgd.cpp, adam.cpp; Note [Device dispatch] in
// ops/dispatch.h). Each step takes every parameter of a group on one device at once (CUDA fuses
// them into a few launches). Guarantees: every device applies the update of torch.optim's
// single-tensor step per element, with the same fused multiply-adds.
#pragma once

#include <vector>

#include "ops/dispatch.h"
#include "weft/tensor.h"

namespace weft::ops {

// Every list holds contiguous float32 tensors on one device, element i of each list of the same
// size; a list the options leave unused (momentum buffers without momentum, max_exp_avg_sqs
// without amsgrad) is empty.
struct SGDStep {
  float wd, mom, damp1, neg_lr;
  bool decay, momentum, first, nesterov;
};
using SGDStepFn = void (*)(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                           const std::vector<Tensor>& momentum_buffers, const SGDStep& k);
WEFT_DECLARE_DISPATCH(SGDStepFn, sgd_step_stub);

// neg_step_size[i] = -lr / bias_correction1 and bc2_sqrt[i] = sqrt(bias_correction2) of
// parameter i's own step count.
struct AdamStep {
  float b1, b2, one_minus_b1, one_minus_b2, wd, eps, decay;
  bool l2, decoupled, amsgrad;
};
using AdamStepFn = void (*)(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                            const std::vector<Tensor>& exp_avgs,
                            const std::vector<Tensor>& exp_avg_sqs,
                            const std::vector<Tensor>& max_exp_avg_sqs,
                            const std::vector<float>& neg_step_size,
                            const std::vector<float>& bc2_sqrt, const AdamStep& k);
WEFT_DECLARE_DISPATCH(AdamStepFn, adam_step_stub);

}  // namespace weft::ops
