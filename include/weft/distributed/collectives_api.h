// torch.distributed's collectives as free functions: all_reduce, broadcast, all_gather,
// reduce_scatter and barrier, on the default group or a given one, in place as in PyTorch.
// Guarantees: with async_op false the call returns after Work::wait() (see it for what that means
// on NCCL); with async_op true it returns the Work at once. Either way it returns the Work. On a
// rank outside `group` (new_group gave it nullptr) the call does nothing and returns a completed
// Work, as PyTorch does for a non-member.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "weft/distributed/process_group.h"

namespace weft::dist {

// The `group` argument: omitted or {} for the default group (PyTorch's group=None), or a group
// from new_group. A literal nullptr is refused at compile time: to a PyTorch reader it means the
// default group, while the nullptr new_group hands non-members means "not in the group".
class GroupArg {
 public:
  GroupArg() = default;
  GroupArg(std::nullopt_t) {}
  GroupArg(std::shared_ptr<ProcessGroup> group) : given_(true), group_(std::move(group)) {}
  GroupArg(std::nullptr_t) = delete;
  // The default group when none was given; nullptr when the given group is a non-member's.
  std::shared_ptr<ProcessGroup> resolve() const;

 private:
  bool given_ = false;
  std::shared_ptr<ProcessGroup> group_;
};

std::shared_ptr<Work> all_reduce(const Tensor& tensor, ReduceOp op = ReduceOp::SUM,
                                 GroupArg group = {}, bool async_op = false);
// `src` is a global rank (a rank of the default group), as in PyTorch; it must be in `group`.
std::shared_ptr<Work> broadcast(const Tensor& tensor, int src, GroupArg group = {},
                                bool async_op = false);
// tensor_list[i] receives the tensor of the group's rank i (as many tensors as the group has).
std::shared_ptr<Work> all_gather(const std::vector<Tensor>& tensor_list, const Tensor& tensor,
                                 GroupArg group = {}, bool async_op = false);
// output receives the reduction over ranks of input_list[rank in group].
std::shared_ptr<Work> reduce_scatter(const Tensor& output, const std::vector<Tensor>& input_list,
                                     ReduceOp op = ReduceOp::SUM, GroupArg group = {},
                                     bool async_op = false);
std::shared_ptr<Work> barrier(GroupArg group = {}, bool async_op = false);

}  // namespace weft::dist
