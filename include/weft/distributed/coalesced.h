// Coalesced collectives (PyTorch's _broadcast_coalesced): many tensors moved in one collective
// per dtype, by flattening them into one buffer on the sender and copying out on every rank.
// Every rank passes tensors of the same shapes, dtypes and order.
#pragma once

#include <vector>

#include "weft/distributed/process_group.h"

namespace weft::dist {

// After it returns every rank's `tensors` hold root's values (float32 and int64 tensors).
void broadcast_coalesced(ProcessGroup& pg, const std::vector<Tensor>& tensors, int root = 0);

}  // namespace weft::dist
