// Compiled as part of the ops layer by tests/CMakeLists.txt's layering probe: the first include
// is the layer's own (it must resolve), the second an nn header, above ops (it must not).
// clang-format off
#include "weft/ops.h"

#include "weft/nn/module.h"
// clang-format on
