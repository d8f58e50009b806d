// DistributedDataParallel: many processes, one model replica each. At construction it checks
// that every rank holds the same parameters (names, shapes, dtypes; the error names the
// first mismatch and the ranks) and broadcasts parameters and buffers from rank 0. In
// training, gradients are averaged across ranks by a Reducer (bucketed all-reduces that run
// while backward continues). state_dict keys carry the "module." prefix, as in PyTorch.
#pragma once

#include <functional>
#include <memory>
#include <optional>

#include "weft/distributed/process_group.h"
#include "weft/distributed/reducer.h"
#include "weft/nn/module.h"

namespace weft::nn {

// The options of torch.nn.parallel.DistributedDataParallel, with PyTorch's defaults.
struct DistributedDataParallelOptions {
  // Accepted for PyTorch parity and ignored (default empty): DDP runs one device per process,
  // the one the module's parameters are on; move the module there (module->to(device)) first.
  std::vector<Device> device_ids = {};
  // Accepted for PyTorch parity and ignored (default none): outputs stay where the module
  // computes them.
  std::optional<Device> output_device = std::nullopt;
  // Default true: in training, every forward first broadcasts rank 0's buffers (BatchNorm's
  // running statistics), so that all replicas stay identical. Turn off for modules without
  // buffers, or whose buffers are synchronised otherwise (SyncBatchNorm), to save a collective.
  bool broadcast_buffers = true;
  // The group whose ranks average gradients; default (null) the default group of
  // init_process_group. Pass a new_group() to run several DDP models on disjoint ranks.
  std::shared_ptr<dist::ProcessGroup> process_group = nullptr;
  // Default 25: gradients are all-reduced in buckets of about this many MiB (the first bucket is
  // at most 1 MiB so communication starts early), each launched as soon as its gradients are in,
  // overlapping backward. Larger buckets mean fewer collectives, smaller ones earlier overlap.
  double bucket_cap_mb = 25;
  // Default false: every parameter that requires grad must receive a gradient in every backward,
  // else the ranks would wait for it forever (DDP then fails naming it). Set true when some
  // parameters take no part in some iterations' loss: each forward walks the autograd graph from
  // the outputs to find them, and the ranks agree (one extra small all-reduce) on which were
  // used anywhere; parameters no rank used keep their .grad untouched. Costs a graph walk per
  // iteration.
  bool find_unused_parameters = false;
  // Default false: after the reduction, gradients are copied out of the bucket buffers into
  // .grad. When true, each parameter's .grad becomes a view into its bucket instead: no copy
  // and no second gradient-sized tensor per parameter, which saves memory on large models.
  bool gradient_as_bucket_view = false;
  // Default false. Set true when the model uses the same parameters in every iteration (the
  // graph does not change): unused parameters are found by walking the first iteration's graph
  // only, and later iterations reuse that set without a walk.
  bool static_graph = false;
};

class DistributedDataParallelImpl : public Module {
 public:
  explicit DistributedDataParallelImpl(std::shared_ptr<Module> module,
                                       DistributedDataParallelOptions options = {});
  Tensor forward(const Tensor& input) override;
  std::vector<Tensor> forward_multi(const std::vector<Tensor>& inputs) override;
  const std::shared_ptr<Module>& module() const { return module_; }
  const std::shared_ptr<dist::ProcessGroup>& process_group() const { return group_; }

  // Gradient accumulation: forwards/backwards inside the guard's lifetime do not
  // communicate; the next synchronised backward averages the accumulated gradients.
  class NoSyncGuard {
   public:
    explicit NoSyncGuard(DistributedDataParallelImpl& d) : d_(d), prev_(d.sync_) {
      d.sync_ = false;
    }
    ~NoSyncGuard() { d_.sync_ = prev_; }
    NoSyncGuard(const NoSyncGuard&) = delete;
    NoSyncGuard& operator=(const NoSyncGuard&) = delete;

   private:
    DistributedDataParallelImpl& d_;
    bool prev_;
  };
  NoSyncGuard no_sync() { return NoSyncGuard(*this); }

  // Uneven inputs (PyTorch's Join): runs `loop` (the user's training loop over this rank's
  // batches); a rank that finishes early keeps taking part in the others' collectives with
  // zero gradients until every rank is done, so nobody hangs. Only gradients of ranks that
  // still have data are averaged in (divided by the world size, as in PyTorch). At the end
  // every rank takes the parameters and buffers of the last rank to finish.
  void join(const std::function<void()>& loop);

  // Replaces the default all-reduce of each bucket (see dist::CommHook).
  void register_comm_hook(dist::CommHook hook);
  const dist::Reducer& reducer() const { return *reducer_; }
  // For a ZeroRedundancyOptimizer with reduce_scatter_grads: zero.attach(ddp->reducer()).
  dist::Reducer& reducer() { return *reducer_; }

 private:
  void sync_buffers();
  void check_same_parameters(const std::vector<std::pair<std::string, Tensor>>& named);
  std::shared_ptr<Module> module_;
  DistributedDataParallelOptions options_;
  std::shared_ptr<dist::ProcessGroup> group_;
  std::unique_ptr<dist::Reducer> reducer_;
  bool sync_ = true;
  bool join_mode_ = false;
};

class DistributedDataParallel : public ModuleHolder<DistributedDataParallelImpl> {
 public:
  using ModuleHolder::ModuleHolder;
  explicit DistributedDataParallel(std::shared_ptr<Module> module,
                                   DistributedDataParallelOptions options = {})
      : ModuleHolder(
            std::make_shared<DistributedDataParallelImpl>(std::move(module), std::move(options))) {}
};

}  // namespace weft::nn

namespace weft::dist {
// Built-in communication hooks: all-reduce in half precision (fp16, or bf16 where the
// backend supports it), halving the bytes on the wire; the result is cast back to fp32.
CommHook fp16_compress_hook();
CommHook bf16_compress_hook();
}  // namespace weft::dist
