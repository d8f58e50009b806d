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
  WEFT_CHECK(input.dim() >= 2, "sync_batch_norm expects [N, C, ...], got ", input.str());
  const int64_t C = input.size(1);
  ChannelStats local = batch_norm_stats(input);
  int64_t count = local.count;
  Tensor mean = local.mean, var = local.var;
  sync.combine_stats(count, mean, var);
  WEFT_CHECK(count > 1, "Expected more than 1 value per channel when training, got ", count,
             " over all replicas (local input ", input.str(), ")");
  if (running_mean.defined())
    update_running_stats(running_mean, running_var, mean, var, count, momentum);
  Tensor invstd = (var + eps).pow(-0.5);
  Tensor out = batch_norm_elemt(input, mean, invstd, weight, bias);
  if (autograd::any_requires_grad({&input, &weight, &bias})) {
    Tensor x = input.detach(), w = weight.defined() ? weight.detach() : Tensor();
    bool gw = weight.requires_grad(), gb = bias.requires_grad();
    BatchNormSync* s = &sync;
    autograd::record("SyncBatchNormBackward", {&input, &weight, &bias}, out,
                     [x, w, mean, invstd, count, gw, gb, s, C](std::vector<Tensor>& g) {
                       auto [sdy, sdyx] = batch_norm_backward_reduce(g[0], x, mean);
                       // Weight and bias gradients stay local (DDP averages them, as in
                       // PyTorch); dx needs the sums over every replica's batch.
                       Tensor gweight = gw ? sdyx * invstd : Tensor();
                       Tensor gbias = gb ? sdy.clone() : Tensor();
                       Tensor both = cat({sdy, sdyx});
                       Tensor s1 = both.narrow(0, 0, C), s2 = both.narrow(0, C, C);
                       s->reduce_grads(s1, s2);
                       Tensor dx =
                           batch_norm_backward_elemt(g[0], x, mean, invstd, w, s1, s2, count);
                       return std::vector<Tensor>{dx, gweight, gbias};
                     });
  }
  return out;
}

}  // namespace weft::nn::functional
