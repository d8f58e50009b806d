// torch.distributed's point-to-point ops as free functions: send, recv, isend, irecv,
// batch_isend_irecv, and monitored_barrier. Peers are global ranks, as in PyTorch. Sends and
// receives are posted at once (not behind the group's queued collectives) and match by
// (peer, tag); monitored_barrier fails naming the rank(s) that did not arrive.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "weft/distributed/collectives_api.h"

namespace weft::dist {

// Blocking: send returns once the tensor is sent, recv once it has arrived (returns src).
void send(const Tensor& tensor, int dst, GroupArg group = {}, int tag = 0);
int recv(const Tensor& tensor, int src, GroupArg group = {}, int tag = 0);
std::shared_ptr<Work> isend(const Tensor& tensor, int dst, GroupArg group = {}, int tag = 0);
std::shared_ptr<Work> irecv(const Tensor& tensor, int src, GroupArg group = {}, int tag = 0);

// One op of batch_isend_irecv, as PyTorch's P2POp(dist.isend, tensor, peer): `op` is isend or
// irecv (anything else is refused).
struct P2POp {
  using Fn = std::shared_ptr<Work> (*)(const Tensor&, int, GroupArg, int);
  P2POp(Fn op, Tensor tensor, int peer, GroupArg group = {}, int tag = 0)
      : op(op), tensor(std::move(tensor)), peer(peer), group(std::move(group)), tag(tag) {}
  Fn op;
  Tensor tensor;
  int peer;
  GroupArg group;
  int tag;
};
// Posts every op (all on one group) and returns their Works, in order.
std::vector<std::shared_ptr<Work>> batch_isend_irecv(const std::vector<P2POp>& p2p_op_list);

// Blocks until every rank of the group arrives; else DistError naming the rank(s) that did not
// within `timeout` (the group's when absent): the first one, or all when wait_all_ranks.
void monitored_barrier(GroupArg group = {}, std::optional<Duration> timeout = std::nullopt,
                       bool wait_all_ranks = false);

}  // namespace weft::dist
