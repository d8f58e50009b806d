// torch.distributed's collectives as free functions: all_reduce, broadcast, all_gather,
// reduce_scatter, barrier, reduce, gather, scatter, all_gather_into_tensor, reduce_scatter_tensor,
// all_to_all_single, all_to_all and new_subgroups, on the default group or a given one, in place
// as in PyTorch (point-to-point ops: p2p.h; object collectives: object_collectives.h).
// Guarantees: with async_op false the call returns after Work::wait() (see it for what that means
// on NCCL); with async_op true it returns the Work at once. Either way it returns the Work. On a
// rank outside `group` (new_group gave it nullptr) the call does nothing and returns a completed
// Work, as PyTorch does for a non-member.
#pragma once

#include <memory>
#include <optional>
#include <string>
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
  bool given() const { return given_; }

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

// Ranks dst and src below are global ranks, as in PyTorch; each must be in `group`.
// tensor on dst receives the reduction over the group's ranks of their tensor.
std::shared_ptr<Work> reduce(const Tensor& tensor, int dst, ReduceOp op = ReduceOp::SUM,
                             GroupArg group = {}, bool async_op = false);
// On dst, gather_list[i] receives the tensor of the group's rank i; elsewhere gather_list is {}.
std::shared_ptr<Work> gather(const Tensor& tensor, const std::vector<Tensor>& gather_list,
                             int dst = 0, GroupArg group = {}, bool async_op = false);
// tensor receives scatter_list[rank in group] of src; scatter_list is {} except on src.
std::shared_ptr<Work> scatter(const Tensor& tensor, const std::vector<Tensor>& scatter_list,
                              int src = 0, GroupArg group = {}, bool async_op = false);
// output_tensor (group size x input_tensor's elements) receives the inputs in rank order.
std::shared_ptr<Work> all_gather_into_tensor(const Tensor& output_tensor,
                                             const Tensor& input_tensor, GroupArg group = {},
                                             bool async_op = false);
// output receives block (rank in group) of the reduction over ranks of input.
std::shared_ptr<Work> reduce_scatter_tensor(const Tensor& output, const Tensor& input,
                                            ReduceOp op = ReduceOp::SUM, GroupArg group = {},
                                            bool async_op = false);
// Rows of input's dim 0: input_split_sizes[j] go to the group's rank j; output receives
// output_split_sizes[j] rows from rank j, in rank order. Empty splits: even.
std::shared_ptr<Work> all_to_all_single(const Tensor& output, const Tensor& input,
                                        const std::vector<int64_t>& output_split_sizes = {},
                                        const std::vector<int64_t>& input_split_sizes = {},
                                        GroupArg group = {}, bool async_op = false);
// input_tensor_list[j] goes to the group's rank j; output_tensor_list[j] receives rank j's.
std::shared_ptr<Work> all_to_all(const std::vector<Tensor>& output_tensor_list,
                                 const std::vector<Tensor>& input_tensor_list, GroupArg group = {},
                                 bool async_op = false);

// PyTorch's new_subgroups: world_size / group_size groups of consecutive global ranks
// ([0, group_size), [group_size, 2 group_size), ...); every rank must call it. Returns this rank's
// subgroup and all subgroups in order (nullptr for those this rank is not in, as new_group).
// group_size must divide the world size (default: the ranks of one host, LOCAL_WORLD_SIZE).
struct Subgroups {
  std::shared_ptr<ProcessGroup> mine;
  std::vector<std::shared_ptr<ProcessGroup>> all;
};
Subgroups new_subgroups(int group_size = -1, std::optional<Duration> timeout = std::nullopt);

namespace detail {
// `global` as a rank of pg, or DistError "<op>: <what> <global> is not a rank of the group (its
// global ranks: ...); ... is a global rank, as in PyTorch".
int group_rank(const std::shared_ptr<ProcessGroup>& pg, int global, const char* op,
               const char* what);
}  // namespace detail

}  // namespace weft::dist
