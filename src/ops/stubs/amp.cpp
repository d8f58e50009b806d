// The stubs of amp.h (Note [Device dispatch] in docs/ARCHITECTURE.md).
#include "ops/stubs/amp.h"

namespace weft::ops {

WEFT_DEFINE_DISPATCH(amp_unscale_stub);
WEFT_DEFINE_DISPATCH(amp_update_scale_stub);

}  // namespace weft::ops
