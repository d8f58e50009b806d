// ZeroRedundancyOptimizer (torch.distributed.optim, ZeRO stage 1): wraps any weft optimizer so
// that each rank keeps optimizer state only for its share of the parameters. Shares are balanced
// by size as PyTorch's (largest parameter first, to the least-loaded rank, group by group); each
// rank steps its share and then every rank's updated parameters reach all ranks (one coalesced
// broadcast per rank, or all-gathers of flat buffers: ZeroOptions). The result equals the
// unsharded optimizer; state_dict() after consolidate_state_dict() is the unsharded optimizer's,
// so either loads the other's; local_state_dict() is this rank's share of it (sharded saves).
// With ZeroOptions::reduce_scatter_grads and attach(ddp->reducer()) it is ZeRO-2: DDP's
// buckets are reduce-scattered and each rank steps its slice of every bucket
// (Note [ZeRO-2 gradient partition]); its consolidated state is still the unsharded one.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "weft/distributed/process_group.h"
#include "weft/distributed/reducer.h"
#include "weft/optim/optimizer.h"

namespace weft::dist {

namespace detail {
class GradPartition;
struct Piece;
}  // namespace detail

// Builds the optimizer of this rank's share from its parameter groups (same options as given).
using OptimizerFactory =
    std::function<std::unique_ptr<optim::Optimizer>(std::vector<optim::ParamGroup>)>;

struct ZeroOptions {
  // How step() brings every rank's updated share to all ranks. Broadcast (default, as
  // PyTorch's): one coalesced broadcast per rank. AllGather: each rank packs its share into a
  // flat buffer (padded to the largest share) and all-gathers move them all; slower on Gloo
  // (bench/README.md, "ZeRO"). Same values either way.
  enum class ParameterSync { Broadcast, AllGather };
  ParameterSync parameter_sync = ParameterSync::Broadcast;
  // AllGather moves the shares this many elements per rank at a time, which bounds its buffers
  // (and the backend's staging copy) to a few times this per rank, however large the model.
  int64_t allgather_chunk = int64_t{4} << 20;
  // ZeRO-2 (Note [ZeRO-2 gradient partition]): with attach(ddp->reducer()) before the first
  // backward, each DDP bucket (padded to a multiple of the group size) is reduce-scattered
  // instead of all-reduced, so rank r receives the averaged gradients of slice r of every
  // bucket only; it steps those slices (views of the parameters) and the updated slices are
  // all-gathered bucket by bucket (parameter_sync and allgather_chunk do not apply). The
  // bytes moved are DDP's all-reduce's. Elementwise optimizers only: SGD, Adam, AdamW.
  // Under it DDP does not write gradients back: after a synchronised backward every
  // parameter's .grad is undefined on every rank (the reduced slices are the .grad of
  // local_optimizer()'s parameters until step() consumes them); gradient accumulation goes
  // through DDP's no_sync(). DDP's find_unused_parameters, static_graph and join() are refused.
  bool reduce_scatter_grads = false;
};

class ZeroRedundancyOptimizer : public optim::Optimizer {
 public:
  // group: where the ranks are (nullptr: the default group). Every rank passes the same
  // parameters (same shapes, same order), as with DistributedDataParallel.
  ZeroRedundancyOptimizer(std::vector<optim::ParamGroup> groups, OptimizerFactory make,
                          std::shared_ptr<ProcessGroup> group = nullptr, ZeroOptions zero = {});
  ZeroRedundancyOptimizer(std::vector<Tensor> params, OptimizerFactory make,
                          optim::ParamGroupOptions options,
                          std::shared_ptr<ProcessGroup> group = nullptr, ZeroOptions zero = {});

  // Steps this rank's share with its hyperparameters as they are now in param_groups() (an LR
  // scheduler may change them), then brings every rank's updated parameters to all ranks.
  void step() override;
  // Gathers the whole state on rank `to` (a collective: every rank calls it).
  void consolidate_state_dict(int to = 0);
  // On the rank consolidate_state_dict() gathered to: the unsharded optimizer's state. Elsewhere,
  // or before consolidating, an error.
  optim::OptimizerState state_dict() const override;
  // This rank's share of the unsharded state, without communication: the groups'
  // hyperparameters and the state of the parameters this rank steps, under their unsharded
  // ("state.<flat index>.") keys. The shares of all ranks together make state_dict().
  optim::OptimizerState local_state_dict() const;
  // Takes an unsharded optimizer's state and keeps its share. The state of parameters other
  // ranks step may be absent (a sharded checkpoint's share, local_state_dict() of any world).
  void load_state_dict(const optim::OptimizerState& state) override;

  // reduce_scatter_grads: registers the hook that makes DDP (reducer: ddp->reducer())
  // reduce-scatter its buckets for this optimizer. Every rank calls it, before the first
  // backward that should reduce for it. DDP's parameters must be exactly the optimizer's; the
  // DDP model must outlive the optimizer's use.
  void attach(Reducer& reducer);

  // Who steps a parameter (not under reduce_scatter_grads, where ranks step slices).
  int rank_of(size_t flat_index) const;
  ProcessGroup& process_group() const { return *group_; }
  // This rank's optimizer (under reduce_scatter_grads: over pieces of parameters, 1-D views of
  // their data; built at the first step).
  optim::Optimizer& local_optimizer();

 private:
  void partition(const OptimizerFactory& make);
  void sync_parameters();
  void broadcast_parameters(const std::vector<const Tensor*>& flat);
  // False (nothing done) where the parameters differ in dtype or device: then broadcast.
  bool allgather_parameters(const std::vector<const Tensor*>& flat);
  // The unsharded state with rank r's local state (its parameter numbering) put into it.
  void merge_local(optim::OptimizerState& whole, const optim::OptimizerState& local, int r) const;
  // The local optimizer's state taken from an unsharded one (this rank's parameters or pieces).
  optim::OptimizerState local_state_from(const optim::OptimizerState& state) const;
  // Rank r's local parameters in local order, as pieces (numel -1: the whole parameter).
  std::vector<detail::Piece> local_pieces(int r) const;
  const Tensor& flat_param(size_t flat_index) const;
  void copy_hyperparameters();
  // reduce_scatter_grads: the step over this rank's pieces, and the local optimizer's creation.
  void step_slices();
  void ensure_local();
  std::shared_ptr<ProcessGroup> group_;
  ZeroOptions zero_;
  std::unique_ptr<optim::Optimizer> local_;
  std::vector<int> owner_;                      // flat index -> rank that steps it
  std::vector<std::vector<size_t>> by_rank_;    // rank -> its flat indices, in its local order
  std::optional<optim::OptimizerState> whole_;  // set by consolidate_state_dict on `to`
  // reduce_scatter_grads only: the factory (the local optimizer is made at the first step), the
  // partition attach() made, and a state loaded before the first step.
  OptimizerFactory make_;
  std::shared_ptr<detail::GradPartition> grads_;
  std::optional<optim::OptimizerState> pending_;
};

}  // namespace weft::dist
