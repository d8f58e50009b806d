// Internal: how the ranks of a group find out which of them share a host, and set up each
// host's shared-memory group, through the group's store (Note [Shared-memory all-reduce] in
// docs/ARCHITECTURE.md). Every rank reaches the same decision: either all use the shared-memory
// path or none does (WEFT_SHM=0 on any rank, no host with two ranks, or a rank that could not
// map its host's segment, which that rank reports on stderr).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "distributed/shm/config.h"
#include "distributed/shm/shm_group.h"
#include "weft/distributed/store.h"

namespace weft::dist::shm {

struct HostPlan {
  int rank = 0;                   // this rank, in the group
  std::vector<int> local;         // the group ranks on this host, ascending; local[0] leads it
  std::vector<int> leaders;       // every host's leader, ascending: one entry per host
  int host_index = 0;             // this host's position in `leaders`
  std::unique_ptr<ShmGroup> shm;  // this host's group; null when the host has one rank
  bool leader() const { return local.front() == rank; }
};

// Called by every rank of the group (rank of size) in its constructor, with this rank's
// settings (a leader's chunk size is its host's). Keys go under "shm/" in `store`; waits are
// bounded by the store's timeout.
std::optional<HostPlan> plan_hosts(Store& store, int rank, int size, const Settings& settings);

}  // namespace weft::dist::shm
