// The stubs of pooling.h (Note [Device dispatch] in docs/ARCHITECTURE.md).
#include "ops/stubs/pooling.h"

namespace weft::ops {

WEFT_DEFINE_DISPATCH(max_pool2d_stub);
WEFT_DEFINE_DISPATCH(max_pool2d_backward_stub);
WEFT_DEFINE_DISPATCH(avg_pool2d_stub);
WEFT_DEFINE_DISPATCH(avg_pool2d_backward_stub);

}  // namespace weft::ops
