// ProcessGroupNCCL in a build without the CUDA backend (CMake compiles this file instead of
// process_group_nccl.cpp when nvcc was not found): constructing one throws DistError saying
// why, so callers name the backend without an #ifdef.
#include "weft/distributed/nccl/process_group_nccl.h"

namespace weft::dist {

struct ProcessGroupNCCL::Impl {};

ProcessGroupNCCL::ProcessGroupNCCL(std::shared_ptr<Store>, int rank, int size, NCCLOptions)
    : ProcessGroup(rank, size) {
  WEFT_DIST_ERROR(
      "nccl backend: this build of weft has no CUDA backend (nvcc was not found "
      "when it was configured); use gloo or mpi, or rebuild with CUDA (rank ",
      rank, " of ", size, ")");
}
// The constructor always throws, so no object exists for the members below to act on.
ProcessGroupNCCL::~ProcessGroupNCCL() = default;
int ProcessGroupNCCL::device() const { return -1; }
std::shared_ptr<Work> ProcessGroupNCCL::allreduce(std::vector<Tensor>, ReduceOp) { return {}; }
std::shared_ptr<Work> ProcessGroupNCCL::broadcast(std::vector<Tensor>, int) { return {}; }
std::shared_ptr<Work> ProcessGroupNCCL::allgather(std::vector<Tensor>, Tensor) { return {}; }
std::shared_ptr<Work> ProcessGroupNCCL::reduce_scatter(Tensor, std::vector<Tensor>, ReduceOp) {
  return {};
}
std::shared_ptr<Work> ProcessGroupNCCL::barrier() { return {}; }
std::shared_ptr<Work> ProcessGroupNCCL::reduce(std::vector<Tensor>, int, ReduceOp) { return {}; }
std::shared_ptr<Work> ProcessGroupNCCL::gather(std::vector<Tensor>, Tensor, int) { return {}; }
std::shared_ptr<Work> ProcessGroupNCCL::scatter(Tensor, std::vector<Tensor>, int) { return {}; }
std::shared_ptr<Work> ProcessGroupNCCL::allgather_into_tensor(Tensor, Tensor) { return {}; }
std::shared_ptr<Work> ProcessGroupNCCL::reduce_scatter_tensor(Tensor, Tensor, ReduceOp) {
  return {};
}
std::shared_ptr<Work> ProcessGroupNCCL::alltoall_base(Tensor, Tensor, std::vector<int64_t>,
                                                      std::vector<int64_t>) {
  return {};
}
std::shared_ptr<Work> ProcessGroupNCCL::alltoall(std::vector<Tensor>, std::vector<Tensor>) {
  return {};
}
std::shared_ptr<Work> ProcessGroupNCCL::send(std::vector<Tensor>, int, int) { return {}; }
std::shared_ptr<Work> ProcessGroupNCCL::recv(std::vector<Tensor>, int, int) { return {}; }

}  // namespace weft::dist
