// Internal: init_process_group's and new_group's groups wrap the backend's (as PyTorch's
// ProcessGroupWrapper), so every backend behaves alike: each collective is numbered in the
// group's CollectiveLog, a timeout becomes a desync report, and under DETAIL the ranks first
// check that they agree on op and shapes (Note [Collective sequence numbers], ARCHITECTURE.md).
#pragma once

#include <memory>
#include <string>

#include "weft/distributed/process_group.h"
#include "weft/distributed/store.h"

namespace weft::dist::detail {

// Wraps `backend` (null stays null: a rank outside a new_group). `group_id` is the same on every
// rank (0: the default group); `store` is the group's own prefixed store, null under MPI.
// Under DETAIL a group whose backend moves device memory only (NCCL) gets a Gloo group of its
// own for the fingerprints, made here collectively through `store` (Gloo's listening address
// resolved towards `master_addr`).
std::shared_ptr<ProcessGroup> track(std::shared_ptr<ProcessGroup> backend, int group_id,
                                    std::shared_ptr<Store> store, const std::string& master_addr);

}  // namespace weft::dist::detail
