// Internal: SGEMM for "skinny" products, where one side is a small batch of rows (M <= 32) and
// the other a large weight matrix: Linear's forward (x W^T), its input gradient (dy W) and its
// weight gradient (dy^T x). OpenBLAS packs the weight into a buffer before multiplying, which
// at batch 16 costs as much as the product itself; these kernels read the weight once, in place,
// with the small operand held in cache. Same argument convention as cblas_sgemm (row-major,
// op(A) is M x K, op(B) is K x N). Returns false, touching nothing, for shapes it does not take.
#pragma once

#include <cstdint>

namespace weft::cpu {

bool skinny_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace weft::cpu
