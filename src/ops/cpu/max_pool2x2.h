// Internal: max pooling with 2x2 windows at stride 2 and no padding (the usual CNN pooling), one
// output row per call, 16 outputs per AVX-512 step, on float32 or bf16 (as its bits; values are
// selected, never computed, so bf16 stays exact). Where AVX-512 (F, BW, VL) is not compiled in,
// kMaxPool2x2Available is false and callers use the general loop. Each maximum is chosen as
// PyTorch chooses it (see takes() in pooling.cpp): values and indices equal the general loop's.
#pragma once

#include <cstdint>

namespace weft::cpu {

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
inline constexpr bool kMaxPool2x2Available = true;
#else
inline constexpr bool kMaxPool2x2Available = false;
#endif

// Output row oh of one plane (W columns; input rows 2oh and 2oh+1 must exist): wo outputs to
// `out`, each maximum's flat index in the plane to `idx`.
void max_pool2x2_row(const float* plane, int64_t W, int64_t oh, int64_t wo, float* out,
                     int64_t* idx);
void max_pool2x2_row(const uint16_t* plane, int64_t W, int64_t oh, int64_t wo, uint16_t* out,
                     int64_t* idx);

}  // namespace weft::cpu
