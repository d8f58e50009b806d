// ProcessGroupGloo: the CPU backend (PyTorch's default), Gloo's collective algorithms over
// its TCP transport, rendezvous through a weft Store. Guarantees: contiguous CPU tensors of
// float32 or int64 (BAND/BOR/BXOR: int64), and for allreduce also fp16/bf16 (DDP's compression
// hooks; reduced in float and rounded back); anything else is refused at the call, naming the
// tensor. Every op and the connection setup end within the group timeout, and a dead peer surfaces
// as DistError naming the op and Gloo's message ("Connection closed by peer [addr]:port") or the
// peer's rank. Ranks that share a host all-reduce through shared memory (hierarchically across
// hosts) unless WEFT_SHM=0 on some rank: Note [Shared-memory all-reduce] in docs/ARCHITECTURE.md.
#pragma once

#include <memory>
#include <string>

#include "weft/distributed/process_group.h"
#include "weft/distributed/store.h"

namespace weft::dist {

struct GlooOptions {
  // Address this rank listens on for its peers. Empty: pick one (see resolve_gloo_options).
  std::string hostname;
  // Network interface to listen on (like GLOO_SOCKET_IFNAME); wins over hostname.
  std::string iface;
  Duration timeout = kDefaultTimeout;  // connection setup and every collective
};

// Fills an empty hostname/iface: GLOO_SOCKET_IFNAME if set; else the local address that routes
// to `peer_host` (MASTER_ADDR), so peers on other hosts can reach us; else the host name if it
// resolves to a local address; else 127.0.0.1.
GlooOptions resolve_gloo_options(GlooOptions options, const std::string& peer_host = "");

class ProcessGroupGloo : public ProcessGroup {
 public:
  // Publishes this rank's address in `store` and connects to every other rank (and sets SIGPIPE
  // to be ignored if it had the default action, so a write to a dead peer fails the op instead
  // of killing the process, as under Python); throws DistError
  // naming rank/size and the cause if the mesh is not complete within options.timeout. Ends with
  // a barrier, so that when any rank returns every rank is done with the store.
  ProcessGroupGloo(std::shared_ptr<Store> store, int rank, int size, GlooOptions options = {});
  ~ProcessGroupGloo() override;  // waits for the running op (bounded by its timeout)
  std::string backend_name() const override { return "gloo"; }

  // A list of tensors is reduced/broadcast tensor by tensor, as one Work.
  std::shared_ptr<Work> allreduce(std::vector<Tensor> tensors,
                                  ReduceOp op = ReduceOp::SUM) override;
  // On one host, a view into a symmetric tensor is folded straight into output; anything else is
  // all-reduced in place and copied, on the op thread.
  // Note [All-reduce into a separate output].
  std::shared_ptr<Work> allreduce_into(Tensor output, Tensor input,
                                       ReduceOp op = ReduceOp::SUM) override;
  std::shared_ptr<Work> broadcast(std::vector<Tensor> tensors, int root = 0) override;
  std::shared_ptr<Work> allgather(std::vector<Tensor> outputs, Tensor input) override;
  // Through shared memory where the group has it (an all-reduce of the concatenated inputs,
  // keeping this rank's slice), else as reduce_scatter_tensor.
  std::shared_ptr<Work> reduce_scatter(Tensor output, std::vector<Tensor> inputs,
                                       ReduceOp op = ReduceOp::SUM) override;
  std::shared_ptr<Work> barrier() override;
  // Shared with the group's other ranks when they all share this host and its shared-memory
  // path is on (Note [Symmetric buffers]).
  Tensor empty_symmetric(const Shape& shape, DType dtype = kFloat32) override;
  std::shared_ptr<Work> reduce(std::vector<Tensor> tensors, int root,
                               ReduceOp op = ReduceOp::SUM) override;
  std::shared_ptr<Work> gather(std::vector<Tensor> outputs, Tensor input, int root) override;
  std::shared_ptr<Work> scatter(Tensor output, std::vector<Tensor> inputs, int root) override;
  std::shared_ptr<Work> allgather_into_tensor(Tensor output, Tensor input) override;
  // Gloo's own reduce-scatter (recursive halving and doubling); its timeout is the one the
  // group connected with (Gloo's legacy algorithms read the connection's).
  std::shared_ptr<Work> reduce_scatter_tensor(Tensor output, Tensor input,
                                              ReduceOp op = ReduceOp::SUM) override;
  std::shared_ptr<Work> alltoall_base(Tensor output, Tensor input,
                                      std::vector<int64_t> output_split_sizes,
                                      std::vector<int64_t> input_split_sizes) override;
  std::shared_ptr<Work> alltoall(std::vector<Tensor> outputs, std::vector<Tensor> inputs) override;
  // Posted at once (not queued behind collectives); Work::wait waits for this one transfer, and
  // then() callbacks run on the thread whose wait saw it finish; is_completed() is true once a
  // wait has. A wait that times out fails the transfer: Gloo closes the connection to the peer.
  std::shared_ptr<Work> send(std::vector<Tensor> tensors, int dst, int tag = 0) override;
  std::shared_ptr<Work> recv(std::vector<Tensor> tensors, int src, int tag = 0) override;

  // The shared-memory segment this rank's all-reduces go through ("/weft-<pid>-<random>",
  // unlinked once every rank of the host mapped it); "" where they go through Gloo alone.
  std::string shm_segment_name() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;  // keeps Gloo's headers out of weft's
};

}  // namespace weft::dist
