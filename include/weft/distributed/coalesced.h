// Coalesced collectives (PyTorch's _broadcast_coalesced): many tensors moved in one collective
// per dtype, by flattening them into one buffer on the sender and copying out on every rank.
// Every rank passes tensors of the same shapes, dtypes and order. Also strings from one rank to
// all and from all to all (bytes, never code), for the small descriptions ranks exchange.
#pragma once

#include <string>
#include <vector>

#include "weft/distributed/process_group.h"

namespace weft::dist {

// After it returns every rank's `tensors` hold root's values (float32 and int64 tensors).
void broadcast_coalesced(ProcessGroup& pg, const std::vector<Tensor>& tensors, int root = 0);

// root's `s` on every rank (the others' `s` is ignored).
std::string broadcast_string(ProcessGroup& pg, const std::string& s, int root);
// Every rank's `s`, in rank order, on every rank.
std::vector<std::string> all_gather_strings(ProcessGroup& pg, const std::string& s);

}  // namespace weft::dist
