// libFuzzer target for the restricted unpickler (Note [Restricted unpickler]). Any input must
// either unpickle or throw weft::Error; what it accepts must hold the invariants the loader
// relies on: the end offset lies inside the input, dicts hold key/value pairs, every tensor's
// storage is one of the storages listed and every element it reaches lies inside that storage.
// Like the legacy format, the bytes after a pickle's STOP are unpickled as the next pickle.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <vector>

#include "serialize/pickle/unpickler.h"
#include "weft/error.h"

namespace pk = weft::serialize::pickle;

namespace {

void check_tensor(const pk::Object& t, const std::set<const pk::Object*>& storages) {
  if (!t.storage || !storages.count(t.storage) || t.sizes.size() != t.strides.size()) std::abort();
  if (t.integer < 0) std::abort();
  __int128 last = t.integer, numel = 1;
  for (size_t d = 0; d < t.sizes.size(); ++d) {
    if (t.sizes[d] < 0 || t.strides[d] < 0) std::abort();
    numel *= t.sizes[d];
    if (t.sizes[d] > 0) last += static_cast<__int128>(t.sizes[d] - 1) * t.strides[d];
  }
  if (numel > 0 && last >= t.storage->integer) std::abort();
}

// Visits every object reachable from the root once (the graph may share objects or cycle).
void check(const pk::Unpickled& u, size_t size) {
  if (u.end == 0 || u.end > size || !u.root) std::abort();
  const std::set<const pk::Object*> storages(u.storages.begin(), u.storages.end());
  std::set<const pk::Object*> seen;
  std::vector<const pk::Object*> todo = {u.root};
  while (!todo.empty()) {
    const pk::Object* o = todo.back();
    todo.pop_back();
    if (!seen.insert(o).second) continue;
    if (o->kind == pk::Kind::Dict && o->items.size() % 2 != 0) std::abort();
    if (o->kind == pk::Kind::Tensor) check_tensor(*o, storages);
    if (o->kind == pk::Kind::Storage && !storages.count(o)) std::abort();
    for (const pk::Object* i : o->items) todo.push_back(i);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pk::Limits limits;
  limits.max_objects = 1 << 16;  // inputs are small; keep RSS well inside the fuzzer's limit
  size_t pos = 0;
  for (int i = 0; i < 5 && pos < size; ++i) {
    try {
      const pk::Unpickled u = pk::unpickle(data + pos, size - pos, limits);
      check(u, size - pos);
      pos += u.end;
    } catch (const weft::Error&) {
      return 0;
    }
  }
  return 0;
}
