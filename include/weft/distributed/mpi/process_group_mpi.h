// ProcessGroupMPI: the cluster backend, MPI's collectives on a communicator of its own (a dup of
// MPI_COMM_WORLD, or a split for subgroups), run under mpirun. MPI is initialised once per
// process (MPI_THREAD_MULTIPLE if offered, else calls are serialised) and finalised at exit.
// Errors return (MPI_ERRORS_RETURN) and become DistError. Timeouts: MPI calls cannot be
// cancelled, so Work::wait(timeout) throws DistError after the timeout while the call stays
// blocked on the group's thread; the group is unusable after that and exit skips MPI_Finalize.
#pragma once

#include <memory>
#include <vector>

#include "weft/distributed/process_group.h"

namespace weft::dist {

class ProcessGroupMPI : public ProcessGroup {
 public:
  // Collective over MPI_COMM_WORLD: every process calls it with the same `ranks` (world ranks;
  // empty: all). Returns nullptr on processes outside `ranks`. Initialises MPI if needed.
  static std::shared_ptr<ProcessGroupMPI> create(const std::vector<int>& ranks = {},
                                                 Duration timeout = kDefaultTimeout);
  // This process's rank and the world size in MPI_COMM_WORLD (initialises MPI if needed).
  static int world_rank();
  static int world_size();

  ~ProcessGroupMPI() override;
  std::string backend_name() const override { return "mpi"; }

  // A list of tensors is reduced/broadcast tensor by tensor, as one Work.
  std::shared_ptr<Work> allreduce(std::vector<Tensor> tensors,
                                  ReduceOp op = ReduceOp::SUM) override;
  std::shared_ptr<Work> broadcast(std::vector<Tensor> tensors, int root = 0) override;
  std::shared_ptr<Work> allgather(std::vector<Tensor> outputs, Tensor input) override;
  std::shared_ptr<Work> reduce_scatter(Tensor output, std::vector<Tensor> inputs,
                                       ReduceOp op = ReduceOp::SUM) override;
  std::shared_ptr<Work> barrier() override;
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
  // MPI_Isend/MPI_Irecv posted at once; Work::wait polls the request (a timed-out one stays
  // posted until the Work goes, which cancels it).
  std::shared_ptr<Work> send(std::vector<Tensor> tensors, int dst, int tag = 0) override;
  std::shared_ptr<Work> recv(std::vector<Tensor> tensors, int src, int tag = 0) override;

  struct Impl;
  ProcessGroupMPI(int rank, int size, std::unique_ptr<Impl> impl);  // use create()

 private:
  std::unique_ptr<Impl> impl_;  // keeps mpi.h out of weft's headers
};

}  // namespace weft::dist
