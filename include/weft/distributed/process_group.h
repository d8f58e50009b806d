// ProcessGroup: torch.distributed's collective interface, implemented by the Gloo, MPI and NCCL
// backends. Collectives are asynchronous: each returns a Work (see Work::wait for what waiting
// means on each backend); a group runs its ops in issue order, so every rank must issue the
// same collectives in the same order. Tensors are in-place (allreduce/broadcast) and must be
// contiguous; shapes and dtypes must agree across ranks.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "weft/distributed/store.h"
#include "weft/tensor.h"

namespace weft::dist {

enum class ReduceOp { SUM, AVG, MAX, MIN, PRODUCT };
std::string to_string(ReduceOp op);  // "SUM", "AVG", ... (as messages name it)

class Work {
 public:
  virtual ~Work() = default;
  // Gloo and MPI: blocks until the op is done; throws its error, or DistError after `timeout`
  // (default: the group's timeout). NCCL (as PyTorch's): without a timeout only orders the
  // caller's current stream after the op and returns at once (barrier() still blocks); with
  // one it blocks the host, aborting the communicator if the op overruns it.
  virtual void wait(std::optional<Duration> timeout = std::nullopt) = 0;
  virtual bool is_completed() = 0;
  // Runs `fn` on the communication thread when the op finishes (immediately if it has);
  // an exception from the op is passed to fn as a non-null exception_ptr.
  virtual void then(std::function<void(std::exception_ptr)> fn) = 0;
};

class ProcessGroup {
 public:
  ProcessGroup(int rank, int size) : rank_(rank), size_(size) {}
  virtual ~ProcessGroup() = default;
  int rank() const { return rank_; }
  int size() const { return size_; }
  virtual std::string backend_name() const = 0;
  // The backend's own group (ProcessGroupGloo, ...): init_process_group's and new_group's groups
  // wrap it to number collectives (Note [Collective sequence numbers]); others are their own.
  virtual ProcessGroup& backend() { return *this; }

  virtual std::shared_ptr<Work> allreduce(std::vector<Tensor> tensors,
                                          ReduceOp op = ReduceOp::SUM) = 0;
  virtual std::shared_ptr<Work> broadcast(std::vector<Tensor> tensors, int root = 0) = 0;
  // output[i] receives rank i's input; every output has the input's shape.
  virtual std::shared_ptr<Work> allgather(std::vector<Tensor> outputs, Tensor input) = 0;
  // output receives the reduction over ranks of inputs[rank]; inputs has size() tensors.
  virtual std::shared_ptr<Work> reduce_scatter(Tensor output, std::vector<Tensor> inputs,
                                               ReduceOp op = ReduceOp::SUM) = 0;
  virtual std::shared_ptr<Work> barrier() = 0;
  Duration timeout() const { return timeout_; }
  // Virtual so that a wrapping group (init_process_group's) passes it on to its backend.
  virtual void set_timeout(Duration t) { timeout_ = t; }

 protected:
  int rank_, size_;
  Duration timeout_ = kDefaultTimeout;
};

}  // namespace weft::dist
