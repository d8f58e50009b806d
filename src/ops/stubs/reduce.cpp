// The stubs of reduce.h (Note [Device dispatch] in docs/ARCHITECTURE.md).
#include "ops/stubs/reduce.h"

namespace weft::ops {

WEFT_DEFINE_DISPATCH(sum_stub);
WEFT_DEFINE_DISPATCH(max_stub);
WEFT_DEFINE_DISPATCH(max_backward_stub);
WEFT_DEFINE_DISPATCH(softmax_stub);

}  // namespace weft::ops
