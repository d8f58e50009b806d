// ProcessGroup: torch.distributed's collective interface, implemented by the Gloo, MPI and NCCL
// backends. Collectives are asynchronous: each returns a Work (see Work::wait for what waiting
// means on each backend); a group runs its ops in issue order, so every rank must issue the
// same collectives in the same order. Tensors are in-place (allreduce/broadcast) and must be
// contiguous; shapes and dtypes must agree across ranks. Point-to-point ops (send/recv) are posted
// at once, outside the issue order, and match by (peer, tag).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "weft/distributed/store.h"
#include "weft/tensor.h"

namespace weft::dist {

// BAND, BOR and BXOR are for integer tensors only (refused on floating dtypes, as in PyTorch).
enum class ReduceOp { SUM, AVG, MAX, MIN, PRODUCT, BAND, BOR, BXOR };
bool is_bitwise(ReduceOp op);
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
  // Not a torch.distributed op: the all-reduce of `input` with its result in `output` (input's
  // dtype and number of elements, contiguous, apart from input), input's contents unspecified
  // afterwards. DDP's Reducer takes its averaged gradients out of the buckets this way. The
  // default all-reduces input in place and copies it into output as the op completes; Gloo's
  // shared-memory path folds straight into output. Note [All-reduce into a separate output].
  virtual std::shared_ptr<Work> allreduce_into(Tensor output, Tensor input,
                                               ReduceOp op = ReduceOp::SUM);

  // The rest of torch.distributed's ops. A backend without one throws DistError naming it.
  // Roots, sources and destinations are ranks of this group.
  // tensors[0] on `root` receives the reduction over ranks (other ranks' tensors are inputs).
  virtual std::shared_ptr<Work> reduce(std::vector<Tensor> tensors, int root,
                                       ReduceOp op = ReduceOp::SUM);
  // On root, outputs[i] receives rank i's input (size() tensors); elsewhere outputs is empty.
  virtual std::shared_ptr<Work> gather(std::vector<Tensor> outputs, Tensor input, int root);
  // On root, inputs[i] goes to rank i's output (size() tensors); elsewhere inputs is empty.
  virtual std::shared_ptr<Work> scatter(Tensor output, std::vector<Tensor> inputs, int root);
  // PyTorch's _allgather_base: output (size() * input.numel() elements) = inputs in rank order.
  virtual std::shared_ptr<Work> allgather_into_tensor(Tensor output, Tensor input);
  // PyTorch's _reduce_scatter_base: output receives block `rank` of the reduction over ranks of
  // input (size() * output.numel() elements).
  virtual std::shared_ptr<Work> reduce_scatter_tensor(Tensor output, Tensor input,
                                                      ReduceOp op = ReduceOp::SUM);
  // Splits along dim 0: rows input_split_sizes[j] go to rank j, output_split_sizes[j] rows come
  // from rank j; an empty list splits evenly (dim 0 divisible by size()).
  virtual std::shared_ptr<Work> alltoall_base(Tensor output, Tensor input,
                                              std::vector<int64_t> output_split_sizes,
                                              std::vector<int64_t> input_split_sizes);
  // inputs[j] goes to rank j; outputs[j] receives rank j's inputs[rank] (size() tensors each).
  virtual std::shared_ptr<Work> alltoall(std::vector<Tensor> outputs, std::vector<Tensor> inputs);
  // One tensor to/from rank dst/src; tag >= 0 (a recv matches the send with its tag).
  virtual std::shared_ptr<Work> send(std::vector<Tensor> tensors, int dst, int tag = 0);
  virtual std::shared_ptr<Work> recv(std::vector<Tensor> tensors, int src, int tag = 0);
  // Blocks until every rank arrives (through rank 0, by send/recv), else throws DistError
  // naming the rank(s) that did not arrive within `timeout` (the group's when absent): the
  // first one missing, or all of them when wait_all_ranks.
  virtual void monitored_barrier(std::optional<Duration> timeout = std::nullopt,
                                 bool wait_all_ranks = false);
  // A zero-filled tensor for collectives, allocated collectively: every rank of the group calls
  // it in the same order with the same shape and dtype. Where the backend can, the ranks on one
  // host map each other's such tensors, and collectives on them (or on contiguous views into
  // them at the same place on every rank) move the data without staging copies (PyTorch's
  // symmetric memory; Note [Symmetric buffers]). Elsewhere, or if the host cannot map it, an
  // ordinary tensor, on every rank alike. Collectives on it are the same ops with the same results.
  virtual Tensor empty_symmetric(const Shape& shape, DType dtype = kFloat32);
  Duration timeout() const { return timeout_; }
  // Virtual so that a wrapping group (init_process_group's) passes it on to its backend.
  virtual void set_timeout(Duration t) { timeout_ = t; }

 protected:
  int rank_, size_;
  Duration timeout_ = kDefaultTimeout;
};

}  // namespace weft::dist
