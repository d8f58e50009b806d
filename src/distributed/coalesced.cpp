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

// Length first, then the bytes packed into int64 elements (a dtype every backend moves).
std::string broadcast_string(ProcessGroup& pg, const std::string& s, int root) {
  Tensor len = tensor(std::vector<int64_t>{static_cast<int64_t>(s.size())}, {1});
  pg.broadcast({len}, root)->wait();
  const int64_t n = len.item<int64_t>();
  Tensor bytes = zeros({(n + 7) / 8}, {.dtype = kInt64});  // int64: every backend moves it
  if (pg.rank() == root)
    std::copy(s.begin(), s.end(), reinterpret_cast<char*>(bytes.data_ptr<int64_t>()));
  pg.broadcast({bytes}, root)->wait();
  const char* p = reinterpret_cast<const char*>(bytes.data_ptr<int64_t>());
  return std::string(p, p + n);
}

std::vector<std::string> all_gather_strings(ProcessGroup& pg, const std::string& s) {
  std::vector<std::string> all;
  for (int r = 0; r < pg.size(); ++r) all.push_back(broadcast_string(pg, s, r));
  return all;
}

}  // namespace weft::dist
