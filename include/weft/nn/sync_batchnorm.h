// SyncBatchNorm: BatchNorm whose training statistics are those of the union of every
// process's batch in a process group (one all-gather of count/mean/variance per forward,
// combined with Chan's stable formula, on the device for CUDA tensors so that no step waits
// for the host; one all-reduce of the two backward sums), so N ranks with batch B normalise
// exactly as one process with batch N*B. Ranks may hold unequal batches, even empty ones.
// Eval mode, world size 1 or no initialised group: plain BatchNorm. The module knows only the
// BatchNormSync interface; the binding to a process group lives in weft/distributed/
// sync_batchnorm.h (dist::batchnorm_sync), which also provides the default-group sync.
#pragma once

#include <functional>
#include <memory>

#include "weft/nn/batchnorm.h"

namespace weft::nn {

// Accepts inputs of rank 2 to 5 ([N, C], [N, C, L], [N, C, H, W], [N, C, D, H, W]).
class SyncBatchNormImpl : public BatchNormImplBase {
 public:
  // `sync`: how statistics are combined (dist::batchnorm_sync(process_group)); null: over the
  // default process group, resolved at each forward.
  explicit SyncBatchNormImpl(int64_t num_features, BatchNormOptions options = {},
                             std::shared_ptr<BatchNormSync> sync = nullptr);
  std::shared_ptr<Module> clone() const override;
};

class SyncBatchNorm : public ModuleHolder<SyncBatchNormImpl> {
 public:
  using ModuleHolder::ModuleHolder;
  explicit SyncBatchNorm(int64_t num_features, BatchNormOptions options = {},
                         std::shared_ptr<BatchNormSync> sync = nullptr)
      : ModuleHolder(std::make_shared<SyncBatchNormImpl>(num_features, options, std::move(sync))) {}
};

// The sync a null `sync` argument stands for: the default process group's. Registered by the
// distributed layer when the library loads (a hooks registry, as PyTorch's CUDAHooks: the lower
// layer declares the slot, the higher one fills it); without one, world size 1.
void set_default_batchnorm_sync(std::function<std::shared_ptr<BatchNormSync>()> make);
std::shared_ptr<BatchNormSync> default_batchnorm_sync();

// Turns every BatchNorm1d/2d/3d in `module` (recursively, the root included) into a
// synchronised one, keeping weight, bias, running statistics, num_batches_tracked, the
// training flag and requires_grad, so state_dict keys and values do not change. Why in
// place rather than by swapping modules as PyTorch does: C++ modules often hold their
// children in member pointers, which a swapped registry entry would leave pointing at the
// old module; converting in place keeps every reference valid. Converted modules report
// type_name() "SyncBatchNorm". `sync`: dist::batchnorm_sync(process_group) for a given group;
// null: the default group. Returns `module`.
std::shared_ptr<Module> convert_sync_batchnorm(std::shared_ptr<Module> module,
                                               std::shared_ptr<BatchNormSync> sync = nullptr);
bool is_sync_batchnorm(const Module& m);

}  // namespace weft::nn
