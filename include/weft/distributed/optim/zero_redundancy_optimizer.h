// ZeroRedundancyOptimizer (torch.distributed.optim, ZeRO stage 1): wraps any weft optimizer so
// that each rank keeps optimizer state only for its share of the parameters. Shares are balanced
// by size as PyTorch's (largest parameter first, to the least-loaded rank, group by group); each
// rank steps its share and then every rank's updated parameters reach all ranks (one coalesced
// broadcast per rank). The result equals the unsharded optimizer; state_dict() after
// consolidate_state_dict() is the unsharded optimizer's, so either loads the other's.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "weft/distributed/process_group.h"
#include "weft/optim/optimizer.h"

namespace weft::dist {

// Builds the optimizer of this rank's share from its parameter groups (same options as given).
using OptimizerFactory =
    std::function<std::unique_ptr<optim::Optimizer>(std::vector<optim::ParamGroup>)>;

class ZeroRedundancyOptimizer : public optim::Optimizer {
 public:
  // group: where the ranks are (nullptr: the default group). Every rank passes the same
  // parameters (same shapes, same order), as with DistributedDataParallel.
  ZeroRedundancyOptimizer(std::vector<optim::ParamGroup> groups, OptimizerFactory make,
                          std::shared_ptr<ProcessGroup> group = nullptr);
  ZeroRedundancyOptimizer(std::vector<Tensor> params, OptimizerFactory make,
                          optim::ParamGroupOptions options,
                          std::shared_ptr<ProcessGroup> group = nullptr);

  // Steps this rank's share with its hyperparameters as they are now in param_groups() (an LR
  // scheduler may change them), then brings every rank's updated parameters to all ranks.
  void step() override;
  // Gathers the whole state on rank `to` (a collective: every rank calls it).
  void consolidate_state_dict(int to = 0);
  // On the rank consolidate_state_dict() gathered to: the unsharded optimizer's state. Elsewhere,
  // or before consolidating, an error.
  optim::OptimizerState state_dict() const override;
  // Takes an unsharded optimizer's state (every rank passes the whole of it) and keeps its share.
  void load_state_dict(const optim::OptimizerState& state) override;

  int rank_of(size_t flat_index) const { return owner_.at(flat_index); }  // who steps a parameter
  optim::Optimizer& local_optimizer() { return *local_; }

 private:
  void partition(const OptimizerFactory& make);
  void sync_parameters();
  // The unsharded state with rank r's local state (its parameter numbering) put into it.
  void merge_local(optim::OptimizerState& whole, const optim::OptimizerState& local, int r) const;
  std::shared_ptr<ProcessGroup> group_;
  std::unique_ptr<optim::Optimizer> local_;
  std::vector<int> owner_;                      // flat index -> rank that steps it
  std::vector<std::vector<size_t>> by_rank_;    // rank -> its flat indices, in its local order
  std::optional<optim::OptimizerState> whole_;  // set by consolidate_state_dict on `to`
};

}  // namespace weft::dist
