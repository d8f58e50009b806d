// ZeRO-2's gradient partition (Note [ZeRO-2 gradient partition] in docs/ARCHITECTURE.md), private
// to ZeroRedundancyOptimizer: the slice of every DDP bucket that each rank steps, the pieces
// (views of parameters' data) covering this rank's slices, the communication hook that
// reduce-scatters the buckets into those slices, and the all-gather of the updated slices.
// Every rank computes every rank's pieces from the reducer's final bucket layout alone.
#pragma once

#include <memory>
#include <vector>

#include "weft/distributed/reducer.h"

namespace weft::dist::detail {

// Part of one parameter that one rank steps: elements [offset, offset + numel) of the parameter
// flattened, which lie at slice_offset in that rank's slice of bucket `bucket`.
struct Piece {
  size_t flat;  // the parameter's flat index in the optimizer
  int64_t offset, numel;
  size_t bucket;
  int64_t slice_offset;
};

class GradPartition {
 public:
  // flat: the optimizer's parameters in flat order (the same set as the reducer's), group_of:
  // the group of each.
  GradPartition(Reducer& reducer, std::vector<Tensor> flat, std::vector<size_t> group_of);
  // The hook to give the reducer (with hook_owns_grads): reduce-scatters each bucket into this
  // rank's slice; before the buckets are final, all-reduces them and keeps the result.
  static CommHook hook(std::shared_ptr<GradPartition> self);

  bool built() const { return built_; }
  // Reads the reducer's (final) bucket layout and makes this rank's pieces.
  void build();
  // Rank r's pieces, by group, in bucket order within a group (the local optimizer's order).
  std::vector<Piece> pieces_of(int r) const;
  const std::vector<Piece>& mine() const { return mine_; }
  // This rank's pieces as tensors: views of the parameters' data.
  const std::vector<Tensor>& piece_tensors() const { return piece_tensors_; }
  // Errors unless a synchronised DDP backward reduced the gradients since the last step.
  void check_reduced() const;
  // Gives each piece its reduced gradient (.grad: a view of the reduced slice).
  void take_grads();
  // After the step: the pieces' gradients are released and the next step needs a new backward.
  void release_grads();
  // Every rank's updated slices to all ranks: each bucket all-gathered, then copied into the
  // parameters.
  void sync_parameters(ProcessGroup& group);

 private:
  std::shared_ptr<Work> on_bucket(ProcessGroup& pg, GradBucket& bucket);
  struct Bucket {
    std::vector<size_t> params;    // reducer indices
    std::vector<int64_t> offsets;  // of each parameter in the bucket
    int64_t numel = 0, slice = 0;  // the bucket's elements; each rank's slice (padded / world)
    Tensor padded;                 // the reducer's buffer, also the all-gather's output
    Tensor reduced;                // this rank's reduced slice, then its updated parameters
  };
  enum class Reduced { None, Whole, Slices };
  Reducer& reducer_;
  int world_, rank_;
  std::vector<Tensor> flat_;
  std::vector<size_t> group_of_, flat_of_;  // flat_of_: reducer index -> flat index
  std::vector<size_t> reducer_of_;          // flat index -> reducer index
  bool built_ = false;
  std::vector<Bucket> buckets_;
  std::vector<Piece> mine_;
  std::vector<Tensor> piece_tensors_;
  Reduced reduced_ = Reduced::None;
  std::vector<Tensor> whole_;  // before the layout is final: each parameter's averaged gradient
};

}  // namespace weft::dist::detail
