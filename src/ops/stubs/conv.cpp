// The stubs of conv.h (Note [Device dispatch] in docs/ARCHITECTURE.md).
#include "ops/stubs/conv.h"

namespace weft::ops {

WEFT_DEFINE_DISPATCH(conv2d_stub);
WEFT_DEFINE_DISPATCH(conv2d_backward_stub);

}  // namespace weft::ops
