// Coalesced collectives (weft/distributed/coalesced.h).
#include "weft/distributed/coalesced.h"

#include "weft/autograd.h"
#include "weft/ops.h"

namespace weft::dist {

// Flattens `tensors` (grouped by dtype) into one buffer per dtype, broadcasts it from `root`,
// and copies the result back: one collective for all parameters or buffers.
void broadcast_coalesced(ProcessGroup& pg, const std::vector<Tensor>& tensors, int root) {
  NoGradGuard ng;
  for (DType dt : {kFloat32, kInt64}) {
    std::vector<Tensor> group;
    int64_t total = 0;
    for (const Tensor& t : tensors)
      if (t.dtype() == dt) {
        group.push_back(t);
        total += t.numel();
      }
    if (group.empty()) continue;
    Tensor flat = empty({total}, {.dtype = dt, .device = group[0].device()});
    int64_t off = 0;
    for (const Tensor& t : group) {
      flat.narrow(0, off, t.numel()).copy_(t.reshape({-1}));
      off += t.numel();
    }
    pg.broadcast({flat}, root)->wait();
    off = 0;
    for (const Tensor& t : group) {
      Tensor dst = t;
      dst.copy_(flat.narrow(0, off, t.numel()).view(t.sizes()));
      off += t.numel();
    }
  }
}

}  // namespace weft::dist
