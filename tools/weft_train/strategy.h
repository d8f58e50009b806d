// weft-train's --strategy. ddp (the default): DistributedDataParallel with the whole optimizer on
// every rank, and rank 0's checkpoint files (checkpoint_files.h). zero: the same DDP, with the
// optimizer wrapped in ZeroRedundancyOptimizer, so each rank keeps the optimizer state of its
// share of the parameters only; its checkpoints are distributed checkpoints, epoch-NNNN.dcp/
// (one file per rank plus an index, committed atomically; the model replicated, the optimizer
// state sharded), that resume at any world size (Note [Resuming a job]).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint_files.h"
#include "options.h"
#include "weft/weft.h"

namespace weft_train {

inline bool is_zero(const Config& c) { return c.strategy == "zero"; }

// --strategy zero outside a launcher: a process group of one (a file:// rendezvous in a
// temporary file), which ZeroRedundancyOptimizer and the sharded checkpoints run on.
void init_single_process_group();

// The optimizer of --optimizer; under --strategy zero wrapped in ZeroRedundancyOptimizer.
std::unique_ptr<weft::optim::Optimizer> make_strategy_optimizer(const Config& c,
                                                                weft::nn::Module& model);

// c.checkpoint_dir/epoch-NNNN.dcp
std::string sharded_checkpoint_path(const std::string& dir, int epoch);

// Collective (every rank): saves epoch `epoch`'s sharded checkpoint and keeps the two newest.
// `metrics_rows` matter on rank 0 only (whose replicated entries are saved).
void save_sharded_checkpoint(const Config& c, int epoch, const weft::nn::Module& model,
                             weft::optim::Optimizer& opt, const weft::amp::GradScaler& scaler,
                             const std::vector<std::string>& metrics_rows);

// Collective: the newest sharded checkpoint that every rank can read its share of (checksums
// verified, of --model, finite), the optimizer state holding this rank's share only; nullopt
// when there is none (a fresh start). Checkpoints present but none usable is an error.
std::optional<Checkpoint> agree_on_sharded_checkpoint(const Config& c,
                                                      const weft::nn::Module& model,
                                                      weft::optim::Optimizer& opt, bool lead);

}  // namespace weft_train
