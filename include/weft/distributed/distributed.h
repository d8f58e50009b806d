// torch.distributed's entry points: init_process_group (env://, tcp:// and file:// rendezvous),
// the default group and new_group for subgroups, and (weft/distributed/collectives_api.h) the
// collectives as free functions: dist::all_reduce(t), broadcast, all_gather, reduce_scatter,
// barrier. The namespace is weft::dist, as Python code says
// `import torch.distributed as dist`.
// env:// reads MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE (and LOCAL_RANK), as torchrun and
// weft-run set them; under mpirun the MPI backend takes rank and size from MPI itself.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "weft/distributed/collectives_api.h"
#include "weft/distributed/process_group.h"

namespace weft::dist {

struct InitOptions {
  // "gloo", "mpi", "nccl" (CUDA builds). "": mpi under mpirun, else nccl when the calling
  // thread's current device is a CUDA device (DeviceGuard), else gloo.
  std::string backend = "";
  std::string init_method = "env://";  // or "file:///path/to/shared/file"
  int world_size = -1;                 // -1: from the environment
  int rank = -1;                       // -1: from the environment
  // Every collective's timeout (and the backend's connection setup); the rendezvous's too unless
  // WEFT_RDZV_TIMEOUT is set. Left at the default, WEFT_COLLECTIVE_TIMEOUT (seconds; weft-run
  // --collective-timeout) sets the collectives' timeout instead. A timed-out collective fails
  // with a DistError naming the rank(s) that did not reach it: see
  // Note [Collective sequence numbers] in docs/ARCHITECTURE.md.
  Duration timeout = kDefaultTimeout;
};

void init_process_group(InitOptions options = {});
bool is_initialized();
void destroy_process_group();
std::shared_ptr<ProcessGroup> default_group();  // throws if not initialized
int get_rank();                                 // 0 when not initialized
int get_world_size();                           // 1 when not initialized
int get_local_rank();                           // LOCAL_RANK, or 0
// A group of the given global ranks; every rank must call it (as in PyTorch), ranks
// outside `ranks` get nullptr.
std::shared_ptr<ProcessGroup> new_group(const std::vector<int>& ranks,
                                        std::optional<Duration> timeout = std::nullopt);
// The global ranks of `group`'s members, in the order of their group ranks (new_group's ranks,
// sorted; 0..size-1 for the default group), as torch.distributed.get_process_group_ranks.
std::vector<int> get_process_group_ranks(const std::shared_ptr<ProcessGroup>& group);

}  // namespace weft::dist
