// The stubs of optim.h (Note [Device dispatch] in docs/ARCHITECTURE.md).
#include "ops/stubs/optim.h"

namespace weft::ops {

WEFT_DEFINE_DISPATCH(sgd_step_stub);
WEFT_DEFINE_DISPATCH(adam_step_stub);

}  // namespace weft::ops
