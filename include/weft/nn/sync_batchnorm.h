// SyncBatchNorm: BatchNorm whose training statistics are those of the union of every
// process's batch in a process group (one all-gather of count/mean/variance per forward,
// combined with Chan's stable formula, on the device for CUDA tensors so that no step waits
// for the host; one all-reduce of the two backward sums), so N ranks with batch B normalise
// exactly as one process with batch N*B. Ranks may hold unequal batches, even empty ones.
// Eval mode, world size 1 or no initialised group: plain BatchNorm.
#pragma once

#include "weft/distributed/process_group.h"
#include "weft/nn/batchnorm.h"

namespace weft::nn {

// Accepts inputs of rank 2 to 5 ([N, C], [N, C, L], [N, C, H, W], [N, C, D, H, W]).
class SyncBatchNormImpl : public BatchNormImplBase {
 public:
  explicit SyncBatchNormImpl(int64_t num_features, BatchNormOptions options = {},
                             std::shared_ptr<dist::ProcessGroup> process_group = nullptr);
  std::shared_ptr<Module> clone() const override;
  std::shared_ptr<dist::ProcessGroup> process_group;
};

class SyncBatchNorm : public ModuleHolder<SyncBatchNormImpl> {
 public:
  using ModuleHolder::ModuleHolder;
  explicit SyncBatchNorm(int64_t num_features, BatchNormOptions options = {},
                         std::shared_ptr<dist::ProcessGroup> pg = nullptr)
      : ModuleHolder(std::make_shared<SyncBatchNormImpl>(num_features, options, std::move(pg))) {}
};

// The BatchNormSync over a process group (null: the default group, if initialised).
std::shared_ptr<BatchNormSync> make_process_group_sync(std::shared_ptr<dist::ProcessGroup> pg);

// Turns every BatchNorm1d/2d/3d in `module` (recursively, the root included) into a
// synchronised one, keeping weight, bias, running statistics, num_batches_tracked, the
// training flag and requires_grad, so state_dict keys and values do not change. Why in
// place rather than by swapping modules as PyTorch does: C++ modules often hold their
// children in member pointers, which a swapped registry entry would leave pointing at the
// old module; converting in place keeps every reference valid. Converted modules report
// type_name() "SyncBatchNorm". Returns `module`.
std::shared_ptr<Module> convert_sync_batchnorm(
    std::shared_ptr<Module> module, std::shared_ptr<dist::ProcessGroup> process_group = nullptr);
bool is_sync_batchnorm(const Module& m);

}  // namespace weft::nn
