// The stubs of copy.h (Note [Device dispatch] in docs/ARCHITECTURE.md).
#include "ops/stubs/copy.h"

namespace weft::ops {

WEFT_DEFINE_DISPATCH(copy_stub);
WEFT_DEFINE_DISPATCH(fill_stub);

}  // namespace weft::ops
