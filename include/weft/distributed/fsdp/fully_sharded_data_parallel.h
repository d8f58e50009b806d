// FullyShardedDataParallel: the common case of fully_shard in one object. It makes every
// submodule the wrap policy picks an FSDP unit (bottom-up), then the root, and gives the model's
// forward, the shards for the optimizer, no_sync, clip_grad_norm_ and the state dicts.
// Guarantees those of fully_shard (weft/distributed/fsdp/fully_shard.h).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "weft/distributed/fsdp/fully_shard.h"

namespace weft::dist::fsdp {

// Whether the submodule at `name` (dotted, relative to the root) becomes a unit of its own.
using WrapPolicy = std::function<bool(const std::string& name, const nn::Module& module)>;
// Each direct child of the root that has parameters (transformer-style blocks in a Sequential).
WrapPolicy wrap_children();

class FullyShardedDataParallel {
 public:
  // policy empty: the root is the only unit.
  explicit FullyShardedDataParallel(std::shared_ptr<nn::Module> module, FSDPOptions options = {},
                                    WrapPolicy policy = {});
  Tensor operator()(const Tensor& input) { return (*module_)(input); }
  Tensor forward(const Tensor& input) { return (*module_)(input); }
  // The shards of every unit: what the optimizer steps (the module's own parameters are views
  // of gathered memory, valid only inside forward and backward).
  std::vector<Tensor> parameters() const { return fsdp::parameters(*module_); }
  // PyTorch's `with model.no_sync():` as a guard: backward passes while it lives accumulate
  // gradients locally; the first backward after it reduces them all.
  class NoSyncGuard {
   public:
    explicit NoSyncGuard(std::shared_ptr<FSDPModule> root) : root_(std::move(root)) {
      root_->set_requires_gradient_sync(false);
    }
    ~NoSyncGuard() { root_->set_requires_gradient_sync(true); }
    NoSyncGuard(const NoSyncGuard&) = delete;
    NoSyncGuard& operator=(const NoSyncGuard&) = delete;

   private:
    std::shared_ptr<FSDPModule> root_;
  };
  NoSyncGuard no_sync() { return NoSyncGuard(root_); }
  double clip_grad_norm_(double max_norm, double norm_type = 2.0) {
    return fsdp::clip_grad_norm_(parameters(), max_norm, norm_type, options_.group);
  }
  nn::StateDict state_dict(bool rank0_only = true) { return full_state_dict(*module_, rank0_only); }
  void load_state_dict(const nn::StateDict& state) { load_full_state_dict(*module_, state); }
  std::shared_ptr<nn::Module> module() const { return module_; }
  FSDPModule& root() const { return *root_; }

 private:
  std::shared_ptr<nn::Module> module_;
  FSDPOptions options_;
  std::shared_ptr<FSDPModule> root_;
};

}  // namespace weft::dist::fsdp
