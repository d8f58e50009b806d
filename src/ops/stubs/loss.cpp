// The stubs of loss.h (Note [Device dispatch] in docs/ARCHITECTURE.md).
#include "ops/stubs/loss.h"

namespace weft::ops {

WEFT_DEFINE_DISPATCH(nll_loss_stub);
WEFT_DEFINE_DISPATCH(nll_loss_backward_stub);
WEFT_DEFINE_DISPATCH(mse_loss_stub);
WEFT_DEFINE_DISPATCH(mse_loss_backward_stub);

}  // namespace weft::ops
