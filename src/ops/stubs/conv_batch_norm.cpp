// The stubs of conv_batch_norm.h (Note [Device dispatch] in docs/ARCHITECTURE.md).
#include "ops/stubs/conv_batch_norm.h"

namespace weft::ops {

WEFT_DEFINE_DISPATCH(conv2d_batch_norm_takes_stub);
WEFT_DEFINE_DISPATCH(conv2d_batch_norm_stub);
WEFT_DEFINE_DISPATCH(conv2d_batch_norm_relu_elemt_stub);
WEFT_DEFINE_DISPATCH(conv2d_batch_norm_relu_backward_stub);
WEFT_DEFINE_DISPATCH(conv2d_batch_norm_layout_stub);

}  // namespace weft::ops
