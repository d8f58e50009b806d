// The stub of channel_shuffle.h (Note [Device dispatch] in docs/ARCHITECTURE.md).
#include "ops/stubs/channel_shuffle.h"

namespace weft::ops {

WEFT_DEFINE_DISPATCH(channel_shuffle_stub);

}  // namespace weft::ops
