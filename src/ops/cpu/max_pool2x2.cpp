#include "ops/cpu/max_pool2x2.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// GCC 12's own intrinsics (_mm512_cvtepi32_epi64, _mm512_extracti64x4_epi64) start from
// _mm512_undefined values and trip -Wmaybe-uninitialized when inlined; nothing here is.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define WEFT_MAX_POOL2X2 1
#endif

namespace weft::cpu {

#if defined(WEFT_MAX_POOL2X2)
namespace {

__mmask16 mask16(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// The n (<= 32) values at p as float32, in two registers of 16.
struct Raw {
  __m512 a, b;
};
Raw load32(const float* p, int64_t n) {
  return {_mm512_maskz_loadu_ps(mask16(n), p), _mm512_maskz_loadu_ps(mask16(n - 16), p + 16)};
}
Raw load32(const uint16_t* p, int64_t n) {
  const __mmask32 m = n >= 32 ? ~__mmask32(0) : __mmask32((1u << n) - 1);
  const __m512i v = _mm512_maskz_loadu_epi16(m, p);
  const auto widen = [](__m256i h) {  // bf16 bits to float32: the bits are the top half
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  };
  return {widen(_mm512_castsi512_si256(v)), widen(_mm512_extracti64x4_epi64(v, 1))};
}

void store16(float* out, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(out, m, v); }
void store16(uint16_t* out, __mmask16 m, __m512 v) {  // exact: v holds widened bf16 values
  _mm256_mask_storeu_epi16(out, m,
                           _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(v), 16)));
}

// Lanes j of a row's values 2j and 2j + 1.
struct Pairs {
  __m512 even, odd;
};
template <typename T>
Pairs load_pairs(const T* p, int64_t n) {
  const Raw r = load32(p, n);
  const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  return {_mm512_permutex2var_ps(r.a, ev, r.b), _mm512_permutex2var_ps(r.a, od, r.b)};
}

// takes(v, cur) of pooling.cpp, lane by lane: v is greater, or v is NaN.
__mmask16 takes(__m512 v, __m512 cur) {
  return _mm512_cmp_ps_mask(v, cur, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
}

// Row 0 before row 1 and left before right within a row: the windows' row-major order, so a
// later element wins only by takes(), as in the general loop.
template <typename T>
void row(const T* plane, int64_t W, int64_t oh, int64_t wo, T* out, int64_t* idx) {
  const __m512i lane2 =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i one = _mm512_set1_epi32(1), w = _mm512_set1_epi32(static_cast<int>(W));
  for (int64_t ow = 0; ow < wo; ow += 16) {
    const int64_t n = wo - ow < 16 ? wo - ow : 16;
    const __mmask16 m = mask16(n);
    const T* r0 = plane + 2 * oh * W + 2 * ow;
    const Pairs a = load_pairs(r0, 2 * n), b = load_pairs(r0 + W, 2 * n);
    const __m512i i00 =
        _mm512_add_epi32(lane2, _mm512_set1_epi32(static_cast<int>(2 * oh * W + 2 * ow)));
    const __m512i i10 = _mm512_add_epi32(i00, w);
    const __mmask16 t0 = takes(a.odd, a.even), t1 = takes(b.odd, b.even);
    const __m512 h0 = _mm512_mask_blend_ps(t0, a.even, a.odd);
    const __m512 h1 = _mm512_mask_blend_ps(t1, b.even, b.odd);
    const __m512i j0 = _mm512_mask_add_epi32(i00, t0, i00, one);
    const __m512i j1 = _mm512_mask_add_epi32(i10, t1, i10, one);
    const __mmask16 t = takes(h1, h0);
    const __m512i j = _mm512_mask_blend_epi32(t, j0, j1);
    store16(out + ow, m, _mm512_mask_blend_ps(t, h0, h1));
    _mm512_mask_storeu_epi64(idx + ow, static_cast<__mmask8>(m),
                             _mm512_cvtepi32_epi64(_mm512_castsi512_si256(j)));
    _mm512_mask_storeu_epi64(idx + ow + 8, static_cast<__mmask8>(m >> 8),
                             _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(j, 1)));
  }
}

}  // namespace

void max_pool2x2_row(const float* plane, int64_t W, int64_t oh, int64_t wo, float* out,
                     int64_t* idx) {
  row(plane, W, oh, wo, out, idx);
}
void max_pool2x2_row(const uint16_t* plane, int64_t W, int64_t oh, int64_t wo, uint16_t* out,
                     int64_t* idx) {
  row(plane, W, oh, wo, out, idx);
}
#else
void max_pool2x2_row(const float*, int64_t, int64_t, int64_t, float*, int64_t*) {}
void max_pool2x2_row(const uint16_t*, int64_t, int64_t, int64_t, uint16_t*, int64_t*) {}
#endif

}  // namespace weft::cpu
