// torch.distributed's free-function collectives (weft/distributed/collectives_api.h): each picks
// the group, skips a non-member, maps broadcast's global src to a group rank, and issues the
// group's op, waiting unless async_op.
#include "weft/distributed/collectives_api.h"

#include <algorithm>
#include <cstdlib>

#include "distributed/work.h"
#include "weft/distributed/distributed.h"

namespace weft::dist {

std::shared_ptr<ProcessGroup> GroupArg::resolve() const {
  return given_ ? group_ : default_group();
}

namespace {

// What a rank outside the group gets: a Work that is already done.
std::shared_ptr<Work> completed() {
  auto w = std::make_shared<detail::WorkImpl>("no-op (not a member of the group)", Duration(0));
  w->finish(nullptr);
  return w;
}

std::shared_ptr<Work> finish(std::shared_ptr<Work> w, bool async_op) {
  if (!async_op) w->wait();
  return w;
}

std::string join(const std::vector<int>& ranks) {
  std::string s;
  for (int r : ranks) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return s;
}

void check_defined(const char* op, const Tensor& t, const char* which) {
  WEFT_CHECK_DIST(t.defined(), op, ": ", which, " is an undefined tensor");
}

}  // namespace

int detail::group_rank(const std::shared_ptr<ProcessGroup>& pg, int global, const char* op,
                       const char* what) {
  const std::vector<int> ranks = get_process_group_ranks(pg);
  auto it = std::find(ranks.begin(), ranks.end(), global);
  WEFT_CHECK_DIST(it != ranks.end(), op, ": ", what, " ", global,
                  " is not a rank of the group (its global ranks: ", join(ranks), "); ", what,
                  " is a global rank, as in PyTorch");
  return static_cast<int>(it - ranks.begin());
}

std::shared_ptr<Work> all_reduce(const Tensor& tensor, ReduceOp op, GroupArg group, bool async_op) {
  check_defined("all_reduce", tensor, "tensor");
  auto pg = group.resolve();
  if (!pg) return completed();
  return finish(pg->allreduce({tensor}, op), async_op);
}

std::shared_ptr<Work> broadcast(const Tensor& tensor, int src, GroupArg group, bool async_op) {
  check_defined("broadcast", tensor, "tensor");
  auto pg = group.resolve();
  if (!pg) return completed();
  return finish(pg->broadcast({tensor}, detail::group_rank(pg, src, "broadcast", "src")), async_op);
}

std::shared_ptr<Work> all_gather(const std::vector<Tensor>& tensor_list, const Tensor& tensor,
                                 GroupArg group, bool async_op) {
  check_defined("all_gather", tensor, "tensor");
  auto pg = group.resolve();
  if (!pg) return completed();
  WEFT_CHECK_DIST(tensor_list.size() == static_cast<size_t>(pg->size()),
                  "all_gather: tensor_list has ", tensor_list.size(), " tensors but the group has ",
                  pg->size(), " ranks");
  return finish(pg->allgather(tensor_list, tensor), async_op);
}

std::shared_ptr<Work> reduce_scatter(const Tensor& output, const std::vector<Tensor>& input_list,
                                     ReduceOp op, GroupArg group, bool async_op) {
  check_defined("reduce_scatter", output, "output");
  auto pg = group.resolve();
  if (!pg) return completed();
  WEFT_CHECK_DIST(input_list.size() == static_cast<size_t>(pg->size()),
                  "reduce_scatter: input_list has ", input_list.size(),
                  " tensors but the group has ", pg->size(), " ranks");
  return finish(pg->reduce_scatter(output, input_list, op), async_op);
}

std::shared_ptr<Work> barrier(GroupArg group, bool async_op) {
  auto pg = group.resolve();
  if (!pg) return completed();
  return finish(pg->barrier(), async_op);
}

std::shared_ptr<Work> reduce(const Tensor& tensor, int dst, ReduceOp op, GroupArg group,
                             bool async_op) {
  check_defined("reduce", tensor, "tensor");
  auto pg = group.resolve();
  if (!pg) return completed();
  return finish(pg->reduce({tensor}, detail::group_rank(pg, dst, "reduce", "dst"), op), async_op);
}

std::shared_ptr<Work> gather(const Tensor& tensor, const std::vector<Tensor>& gather_list, int dst,
                             GroupArg group, bool async_op) {
  check_defined("gather", tensor, "tensor");
  auto pg = group.resolve();
  if (!pg) return completed();
  return finish(pg->gather(gather_list, tensor, detail::group_rank(pg, dst, "gather", "dst")),
                async_op);
}

std::shared_ptr<Work> scatter(const Tensor& tensor, const std::vector<Tensor>& scatter_list,
                              int src, GroupArg group, bool async_op) {
  check_defined("scatter", tensor, "tensor");
  auto pg = group.resolve();
  if (!pg) return completed();
  return finish(pg->scatter(tensor, scatter_list, detail::group_rank(pg, src, "scatter", "src")),
                async_op);
}

std::shared_ptr<Work> all_gather_into_tensor(const Tensor& output_tensor,
                                             const Tensor& input_tensor, GroupArg group,
                                             bool async_op) {
  check_defined("all_gather_into_tensor", output_tensor, "output_tensor");
  check_defined("all_gather_into_tensor", input_tensor, "input_tensor");
  auto pg = group.resolve();
  if (!pg) return completed();
  return finish(pg->allgather_into_tensor(output_tensor, input_tensor), async_op);
}

std::shared_ptr<Work> reduce_scatter_tensor(const Tensor& output, const Tensor& input, ReduceOp op,
                                            GroupArg group, bool async_op) {
  check_defined("reduce_scatter_tensor", output, "output");
  check_defined("reduce_scatter_tensor", input, "input");
  auto pg = group.resolve();
  if (!pg) return completed();
  return finish(pg->reduce_scatter_tensor(output, input, op), async_op);
}

std::shared_ptr<Work> all_to_all_single(const Tensor& output, const Tensor& input,
                                        const std::vector<int64_t>& output_split_sizes,
                                        const std::vector<int64_t>& input_split_sizes,
                                        GroupArg group, bool async_op) {
  check_defined("all_to_all_single", output, "output");
  check_defined("all_to_all_single", input, "input");
  auto pg = group.resolve();
  if (!pg) return completed();
  return finish(pg->alltoall_base(output, input, output_split_sizes, input_split_sizes), async_op);
}

std::shared_ptr<Work> all_to_all(const std::vector<Tensor>& output_tensor_list,
                                 const std::vector<Tensor>& input_tensor_list, GroupArg group,
                                 bool async_op) {
  auto pg = group.resolve();
  if (!pg) return completed();
  return finish(pg->alltoall(output_tensor_list, input_tensor_list), async_op);
}

Subgroups new_subgroups(int group_size, std::optional<Duration> timeout) {
  const int world = get_world_size();
  if (group_size <= 0) {
    const char* env = std::getenv("LOCAL_WORLD_SIZE");
    group_size = env && *env ? std::atoi(env) : world;
  }
  WEFT_CHECK_DIST(group_size > 0 && group_size <= world && world % group_size == 0,
                  "new_subgroups: group_size ", group_size,
                  " must be positive and divide the world size ", world);
  Subgroups out;
  for (int start = 0; start < world; start += group_size) {
    std::vector<int> ranks;
    for (int r = start; r < start + group_size; ++r) ranks.push_back(r);
    out.all.push_back(new_group(ranks, timeout));
    if (out.all.back()) out.mine = out.all.back();
  }
  return out;
}

}  // namespace weft::dist
