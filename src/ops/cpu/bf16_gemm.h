// Internal: bf16 matrix products on oneDNN's matmul (float32 accumulation, the product rounded
// once to bf16), used where oneDNN has a native kernel for the CPU (AVX512-BF16/AMX); its
// reference kernels are far slower than widening to float32, so those are refused. Same
// argument convention as cblas_sgemm (row-major, op(A) is M x K, op(B) is K x N), beta 0; an
// optional float32 bias[N] is added to every row before the rounding (Linear's addmm).
// Returns false, touching nothing, where oneDNN has no native kernel for the product.
#pragma once

#include <cstdint>

namespace weft::cpu {

bool bf16_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A,
               int64_t lda, const uint16_t* B, int64_t ldb, uint16_t* C, int64_t ldc,
               const float* bias = nullptr);

}  // namespace weft::cpu
