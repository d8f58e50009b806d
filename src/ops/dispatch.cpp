// The list of every dispatch stub (Note [Device dispatch] in docs/ARCHITECTURE.md), which tests
// walk to check that each op has its kernels.
#include "ops/dispatch.h"

namespace weft::ops {

std::vector<const DispatchStubBase*>& dispatch_stubs() {
  // A function-local static: stubs list themselves from other objects' static initialisers.
  static std::vector<const DispatchStubBase*> stubs;
  return stubs;
}

}  // namespace weft::ops
