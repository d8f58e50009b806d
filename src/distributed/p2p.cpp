// torch.distributed's point-to-point free functions (weft/distributed/p2p.h): each maps the global
// peer to a rank of the group and posts the group's send or recv.
#include "weft/distributed/p2p.h"

#include "distributed/work.h"

namespace weft::dist {

namespace {

std::shared_ptr<Work> completed() {
  auto w = std::make_shared<detail::WorkImpl>("no-op (not a member of the group)", Duration(0));
  w->finish(nullptr);
  return w;
}

std::shared_ptr<Work> post(bool is_send, const Tensor& tensor, int peer, const GroupArg& group,
                           int tag) {
  const char* op = is_send ? "isend" : "irecv";
  WEFT_CHECK_DIST(tensor.defined(), op, ": tensor is an undefined tensor");
  auto pg = group.resolve();
  if (!pg) return completed();
  const int r = detail::group_rank(pg, peer, op, is_send ? "dst" : "src");
  return is_send ? pg->send({tensor}, r, tag) : pg->recv({tensor}, r, tag);
}

}  // namespace

std::shared_ptr<Work> isend(const Tensor& tensor, int dst, GroupArg group, int tag) {
  return post(true, tensor, dst, group, tag);
}

std::shared_ptr<Work> irecv(const Tensor& tensor, int src, GroupArg group, int tag) {
  return post(false, tensor, src, group, tag);
}

void send(const Tensor& tensor, int dst, GroupArg group, int tag) {
  isend(tensor, dst, std::move(group), tag)->wait();
}

int recv(const Tensor& tensor, int src, GroupArg group, int tag) {
  irecv(tensor, src, std::move(group), tag)->wait();
  return src;
}

std::vector<std::shared_ptr<Work>> batch_isend_irecv(const std::vector<P2POp>& p2p_op_list) {
  WEFT_CHECK_DIST(!p2p_op_list.empty(), "batch_isend_irecv: the op list is empty");
  const auto pg = p2p_op_list[0].group.resolve();
  for (size_t i = 0; i < p2p_op_list.size(); ++i) {
    const P2POp& p = p2p_op_list[i];
    WEFT_CHECK_DIST(p.op == &isend || p.op == &irecv, "batch_isend_irecv: op ", i,
                    " is neither isend nor irecv");
    WEFT_CHECK_DIST(p.group.resolve() == pg, "batch_isend_irecv: op ", i,
                    " is on another group than op 0; all ops must use one group");
  }
  std::vector<std::shared_ptr<Work>> works;
  for (const P2POp& p : p2p_op_list) works.push_back(p.op(p.tensor, p.peer, p.group, p.tag));
  return works;
}

void monitored_barrier(GroupArg group, std::optional<Duration> timeout, bool wait_all_ranks) {
  auto pg = group.resolve();
  if (!pg) return;
  pg->monitored_barrier(timeout, wait_all_ranks);
}

}  // namespace weft::dist
