// ProcessGroupNCCL: the CUDA backend (PyTorch's default when a CUDA device is current), NCCL's
// collectives on one GPU per rank, the communicator set up through a weft Store. Collectives run
// on the group's own NCCL stream after the work already queued on the caller's current stream
// (an event, no host synchronisation); Work::wait() makes the current stream wait for the op and
// returns at once, wait(timeout) blocks the host. Guarantees: float32/int64/fp16/bf16 contiguous
// tensors on the group's device only (refused at the call, naming the tensor); setup and every op
// end within the group timeout: a watchdog aborts the communicator (ncclCommAbort) when an op
// overruns it, failing that op and every later one with a DistError naming the rank and the op.
// In a build without the CUDA backend the class exists and its constructor throws DistError
// saying so (src/distributed/nccl/no_nccl.cpp), so callers need no #ifdef.
#pragma once

#include <memory>
#include <string>

#include "weft/distributed/process_group.h"
#include "weft/distributed/store.h"

namespace weft::dist {

struct NCCLOptions {
  // The rank's GPU. -1: the thread's current device if it is a CUDA device, else
  // LOCAL_RANK % device_count() (one GPU per local rank, as weft-run/torchrun start them).
  int device = -1;
  Duration timeout = kDefaultTimeout;  // communicator setup and every collective
};

class ProcessGroupNCCL : public ProcessGroup {
 public:
  // Rank 0 creates the NCCL unique id and publishes it in `store`; the others read it. Throws
  // DistError naming rank/size and the cause when the communicator is not up within the timeout.
  ProcessGroupNCCL(std::shared_ptr<Store> store, int rank, int size, NCCLOptions options = {});
  // Waits (up to the timeout) for the ops still running, then destroys the communicator; aborts
  // it instead if they do not finish.
  ~ProcessGroupNCCL() override;
  std::string backend_name() const override { return "nccl"; }
  int device() const;

  // A list of tensors is one NCCL group call (ncclGroupStart/End), one Work.
  std::shared_ptr<Work> allreduce(std::vector<Tensor> tensors,
                                  ReduceOp op = ReduceOp::SUM) override;
  std::shared_ptr<Work> broadcast(std::vector<Tensor> tensors, int root = 0) override;
  std::shared_ptr<Work> allgather(std::vector<Tensor> outputs, Tensor input) override;
  std::shared_ptr<Work> reduce_scatter(Tensor output, std::vector<Tensor> inputs,
                                       ReduceOp op = ReduceOp::SUM) override;
  // An allreduce of one element; its wait() blocks the host until every rank has arrived.
  std::shared_ptr<Work> barrier() override;
  // ncclReduce, ncclAllGather, ncclReduceScatter; gather, scatter and the all-to-alls are grouped
  // ncclSend/ncclRecv. BAND/BOR/BXOR are refused (NCCL has none).
  std::shared_ptr<Work> reduce(std::vector<Tensor> tensors, int root,
                               ReduceOp op = ReduceOp::SUM) override;
  std::shared_ptr<Work> gather(std::vector<Tensor> outputs, Tensor input, int root) override;
  std::shared_ptr<Work> scatter(Tensor output, std::vector<Tensor> inputs, int root) override;
  std::shared_ptr<Work> allgather_into_tensor(Tensor output, Tensor input) override;
  std::shared_ptr<Work> reduce_scatter_tensor(Tensor output, Tensor input,
                                              ReduceOp op = ReduceOp::SUM) override;
  std::shared_ptr<Work> alltoall_base(Tensor output, Tensor input,
                                      std::vector<int64_t> output_split_sizes,
                                      std::vector<int64_t> input_split_sizes) override;
  std::shared_ptr<Work> alltoall(std::vector<Tensor> outputs, std::vector<Tensor> inputs) override;
  // One ncclSend/ncclRecv on the group's stream, in issue order with the collectives: two ranks
  // that both send first may wait on each other for large messages (issue a matching order).
  std::shared_ptr<Work> send(std::vector<Tensor> tensors, int dst, int tag = 0) override;
  std::shared_ptr<Work> recv(std::vector<Tensor> tensors, int src, int tag = 0) override;

  struct Impl;  // public for the implementation's helpers only

 private:
  std::shared_ptr<Impl> impl_;  // shared with the watchdog thread
};

}  // namespace weft::dist
