// The stubs of elementwise.h (Note [Device dispatch] in docs/ARCHITECTURE.md).
#include "ops/stubs/elementwise.h"

namespace weft::ops {

WEFT_DEFINE_DISPATCH(unary_stub);
WEFT_DEFINE_DISPATCH(unary_backward_stub);
WEFT_DEFINE_DISPATCH(scalar_inplace_stub);
WEFT_DEFINE_DISPATCH(binary_stub);
WEFT_DEFINE_DISPATCH(binary_inplace_stub);
WEFT_DEFINE_DISPATCH(binary_reduced_native_stub);

}  // namespace weft::ops
