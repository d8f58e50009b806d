// The stubs of batch_norm.h (Note [Device dispatch] in docs/ARCHITECTURE.md).
#include "ops/stubs/batch_norm.h"

namespace weft::ops {

WEFT_DEFINE_DISPATCH(batch_norm_stats_stub);
WEFT_DEFINE_DISPATCH(batch_norm_elemt_stub);
WEFT_DEFINE_DISPATCH(batch_norm_backward_reduce_stub);
WEFT_DEFINE_DISPATCH(batch_norm_backward_elemt_stub);
WEFT_DEFINE_DISPATCH(batch_norm_relu_elemt_stub);
WEFT_DEFINE_DISPATCH(batch_norm_relu_backward_stub);
WEFT_DEFINE_DISPATCH(update_running_stats_stub);
WEFT_DEFINE_DISPATCH(batch_norm_gather_stats_stub);
WEFT_DEFINE_DISPATCH(batch_norm_reduced_native_stub);

}  // namespace weft::ops
