// Compiled as part of the tensor layer by tests/CMakeLists.txt's layering probe: the tensor's
// header resolves; a private header of the ops layer, above it, must not.
// clang-format off
#include "weft/tensor.h"

#include "ops/cpu/parallel.h"
// clang-format on
