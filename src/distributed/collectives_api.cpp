// torch.distributed's free-function collectives (weft/distributed/collectives_api.h): each picks
// the group, skips a non-member, maps broadcast's global src to a group rank, and issues the
// group's op, waiting unless async_op.
#include "weft/distributed/collectives_api.h"

#include <algorithm>

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
  const std::vector<int> ranks = get_process_group_ranks(pg);
  auto it = std::find(ranks.begin(), ranks.end(), src);
  WEFT_CHECK_DIST(it != ranks.end(), "broadcast: src ", src,
                  " is not a rank of the group (its global ranks: ", join(ranks),
                  "); src is a global rank, as in PyTorch");
  return finish(pg->broadcast({tensor}, static_cast<int>(it - ranks.begin())), async_op);
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

}  // namespace weft::dist
