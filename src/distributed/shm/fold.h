// Internal: the arithmetic of the shared-memory all-reduce (Note [Shared-memory all-reduce] in
// docs/ARCHITECTURE.md). fold() combines n ranks' buffers element by element in rank order, so
// every rank that folds the same bytes gets the same bits; at two ranks each op gives exactly
// what Gloo's pairwise combine gives (a op b is commutative in IEEE arithmetic). average() is the
// Gloo path's AVG step, so AVG matches it too.
#pragma once

#include <cstddef>

#include "weft/distributed/process_group.h"

namespace weft::dist::shm {

// out[i] = ((srcs[0][i] op srcs[1][i]) op srcs[2][i]) ... for `count` elements of `dtype` (n >= 1;
// AVG folds as SUM). fp16/bf16 are combined in float and rounded once at the end; int64 sums and
// products wrap. `out` may be one of the sources.
void fold(void* out, const void* const* srcs, int n, size_t count, DType dtype, ReduceOp op);

// AVG's division of a sum, as the Gloo path does it: float32 x / float(d); int64 truncating;
// fp16/bf16 widened to float, divided, rounded back.
void average(void* data, size_t count, DType dtype, int divisor);

}  // namespace weft::dist::shm
