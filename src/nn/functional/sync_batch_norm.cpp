// SyncBatchNorm's kernel: batch norm whose statistics (forward) and reductions (backward)
// are combined across replicas through nn::BatchNormSync, one collective each way.
#include "weft/autograd.h"
#include "weft/nn/batch_norm_kernels.h"
#include "weft/nn/batchnorm.h"
#include "weft/nn/functional.h"
#include "weft/ops.h"

namespace weft::nn::functional {

Tensor sync_batch_norm(const Tensor& input, Tensor running_mean, Tensor running_var,
                       const Tensor& weight, const Tensor& bias, double momentum, double eps,
                       BatchNormSync& sync) {
  using namespace detail;
  if (batch_norm_needs_widening(input, running_mean, running_var, weight, bias))
    return batch_norm_widened(
        input, running_mean, running_var, weight, bias,
        [&](const Tensor& x, Tensor rm, Tensor rv, const Tensor& w, const Tensor& b) {
          return sync_batch_norm(x, rm, rv, w, b, momentum, eps, sync);
        });
  WEFT_CHECK(input.dim() >= 2, "sync_batch_norm expects [N, C, ...], got ", input.str());
  const int64_t C = input.size(1);
  ChannelStats local = batch_norm_stats(input);
  // For CUDA tensors the global count stays on the device (checking it would make every step
  // wait for the host), so only what is known locally is checked, as in PyTorch: one value per
  // channel and no other replica to add to it.
  if (input.device().is_cuda())
    WEFT_CHECK(local.count > 1 || sync.world_size() > 1,
               "Expected more than 1 value per channel when training, got input ", input.str());
  GatheredStats all = combine_channel_stats(sync.all_gather_stats(pack_channel_stats(local)));
  const Tensor dcount = all.device_count;  // defined for CUDA tensors
  if (!dcount.defined())
    WEFT_CHECK(all.count > 1, "Expected more than 1 value per channel when training, got ",
               all.count, " over all replicas (local input ", input.str(), ")");
  const Tensor mean = all.mean, var = all.var;
  const int64_t count = all.count;
  if (running_mean.defined()) {
    if (dcount.defined())
      update_running_stats(running_mean, running_var, mean, var, dcount, momentum);
    else
      update_running_stats(running_mean, running_var, mean, var, count, momentum);
  }
  Tensor invstd = (var + eps).pow(-0.5);
  Tensor out = batch_norm_elemt(input, mean, invstd, weight, bias);
  if (autograd::any_requires_grad({&input, &weight, &bias})) {
    Tensor x = input.detach(), w = weight.defined() ? weight.detach() : Tensor();
    bool gw = weight.requires_grad(), gb = bias.requires_grad();
    BatchNormSync* s = &sync;
    autograd::record("SyncBatchNormBackward", {&input, &weight, &bias}, out,
                     [x, w, mean, invstd, count, dcount, gw, gb, s, C](std::vector<Tensor>& g) {
                       auto [sdy, sdyx] = batch_norm_backward_reduce(g[0], x, mean);
                       // Weight and bias gradients stay local (DDP averages them, as in
                       // PyTorch); dx needs the sums over every replica's batch.
                       Tensor gweight = gw ? sdyx * invstd : Tensor();
                       Tensor gbias = gb ? sdy.clone() : Tensor();
                       Tensor both = cat({sdy, sdyx});
                       Tensor s1 = both.narrow(0, 0, C), s2 = both.narrow(0, C, C);
                       s->reduce_grads(s1, s2);
                       Tensor dx =
                           dcount.defined()
                               ? batch_norm_backward_elemt(g[0], x, mean, invstd, w, s1, s2, dcount)
                               : batch_norm_backward_elemt(g[0], x, mean, invstd, w, s1, s2, count);
                       return std::vector<Tensor>{dx, gweight, gbias};
                     },
                     {x, w});
  }
  return out;
}

}  // namespace weft::nn::functional
