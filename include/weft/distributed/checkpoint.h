// Distributed checkpoints (torch.distributed.checkpoint): a state dict whose entries are either
// replicated tensors or shards (a box of a larger tensor at given offsets) is saved as one
// safetensors file per rank plus an index of which key and box lives where. The save commits
// atomically: every rank writes into a temporary directory, and once all have written and checked
// their part rank 0 swaps it into place, so a crash at any point leaves the previous checkpoint
// whole (its temporary directory is removed by the next save). Loading fills any other sharding
// (another world size) from the boxes that overlap it.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <variant>

#include "weft/distributed/process_group.h"

namespace weft::dist::checkpoint {

// This rank's box of a tensor of global_shape, starting at offsets (local's shape is the box's).
struct ShardedTensor {
  Tensor local;
  Shape global_shape;
  Shape offsets;
};

// A replicated Tensor (every rank holds all of it; rank 0's copy is saved) or a shard.
using Entry = std::variant<Tensor, ShardedTensor>;
using StateDict = std::map<std::string, Entry>;

// Collective over `group` (nullptr: the default group). Keys must be the same on every rank.
void save(const StateDict& state, const std::string& dir,
          std::shared_ptr<ProcessGroup> group = nullptr);
// Fills every entry of `state` in place (each rank its own boxes) from the checkpoint in `dir`,
// whatever the world size and sharding it was saved with. Not collective: each rank reads the
// files it needs (a shared file system, as PyTorch's).
void load(StateDict& state, const std::string& dir);
// What the checkpoint in `dir` holds, from its index alone: each tensor's dtype and global shape
// (to size the entries a load fills; PyTorch's reader.read_metadata()).
struct TensorInfo {
  DType dtype;
  Shape shape;
};
std::map<std::string, TensorInfo> read_metadata(const std::string& dir);
// Whole tensors from the checkpoint, for readers that know nothing of shards.
std::map<std::string, Tensor> load_full(const std::string& dir);
// One plain safetensors file of whole tensors (plain weft and PyTorch load it).
void consolidate(const std::string& dir, const std::string& safetensors_path);

}  // namespace weft::dist::checkpoint
