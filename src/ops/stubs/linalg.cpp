// The stubs of linalg.h (Note [Device dispatch] in docs/ARCHITECTURE.md).
#include "ops/stubs/linalg.h"

namespace weft::ops {

WEFT_DEFINE_DISPATCH(gemm_stub);
WEFT_DEFINE_DISPATCH(gemm_reduced_native_stub);
WEFT_DEFINE_DISPATCH(addmm_stub);

}  // namespace weft::ops
