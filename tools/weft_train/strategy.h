// weft-train's --strategy. ddp (the default): DistributedDataParallel with the whole optimizer on
// every rank, and rank 0's checkpoint files (checkpoint_files.h). zero: the same DDP, with the
// optimizer wrapped in ZeroRedundancyOptimizer, so each rank keeps the optimizer state of its
// share of the parameters only; its checkpoints are distributed checkpoints, epoch-NNNN.dcp/
// (one file per rank plus an index, committed atomically; the model replicated, the optimizer
// state sharded), that resume at any world size (Note [Resuming a job]). fsdp:
// FullyShardedDataParallel (fully_shard on each layer with parameters, then the root; the
// optimizer steps the shards); its checkpoints have the same layout, the model and the
// optimizer state both sharded, each parameter's entries flattened so that they reshard.
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
inline bool is_fsdp(const Config& c) { return c.strategy == "fsdp"; }
// zero and fsdp: distributed checkpoints (epoch-NNNN.dcp/) instead of rank 0's files.
inline bool sharded_checkpoints(const Config& c) { return is_zero(c) || is_fsdp(c); }

// --strategy zero or fsdp outside a launcher: a process group of one (a file:// rendezvous in a
// temporary file), which ZeroRedundancyOptimizer, FSDP and the sharded checkpoints run on.
void init_single_process_group();

// --strategy fsdp (any world size, one process included): makes each child of `model` that has
// parameters an FSDP unit, then `model` itself; afterwards the model's forward gathers and frees
// parameters (every rank must run as many forwards) and fsdp::parameters(model) are the shards.
// Returns the network to train: the model behind a forward that first broadcasts its buffers
// (BatchNorm's running statistics) from rank 0, as DDP does, so that every rank and a resumed
// run evaluate with the same ones.
std::shared_ptr<weft::nn::Module> shard_model(weft::nn::Sequential& model);

// The optimizer of --optimizer; under --strategy zero wrapped in ZeroRedundancyOptimizer, under
// fsdp stepping the shards (shard_model first).
std::unique_ptr<weft::optim::Optimizer> make_strategy_optimizer(const Config& c,
                                                                weft::nn::Module& model);

// c.checkpoint_dir/epoch-NNNN.dcp
std::string sharded_checkpoint_path(const std::string& dir, int epoch);

// Collective (every rank): saves epoch `epoch`'s sharded checkpoint and keeps the two newest.
// `metrics_rows` matter on rank 0 only (whose replicated entries are saved).
void save_sharded_checkpoint(const Config& c, int epoch, weft::nn::Module& model,
                             weft::optim::Optimizer& opt, const weft::amp::GradScaler& scaler,
                             const std::vector<std::string>& metrics_rows);

// Collective: the newest sharded checkpoint that every rank can read its share of (checksums
// verified, of --model, finite), the optimizer state holding this rank's share only; nullopt
// when there is none (a fresh start). Checkpoints present but none usable is an error. Under
// fsdp the model's shards and buffers are loaded here (Checkpoint::model stays empty).
std::optional<Checkpoint> agree_on_sharded_checkpoint(const Config& c, weft::nn::Module& model,
                                                      weft::optim::Optimizer& opt, bool lead);

}  // namespace weft_train
