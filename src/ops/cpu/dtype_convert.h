// Internal to the CPU kernels: the C++ element type of each DType (the 16-bit floats as their
// bits), conversions between them (16-bit floats through float32, rounding to nearest even as
// PyTorch does; NaN stays NaN, overflow goes to inf) and dispatch_dtype, which calls a templated
// lambda with the element type of a runtime DType. The CUDA side is src/ops/cuda/dispatch.cuh.
#pragma once

#include <cstdint>
#include <type_traits>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "ops/dispatch_dtype.h"
#include "weft/half.h"

namespace weft::cpu {

struct BFloat16Bits {
  uint16_t bits;
};
struct Float16Bits {
  uint16_t bits;
};

template <typename T>
inline constexpr bool is_half_v = std::is_same_v<T, BFloat16Bits> || std::is_same_v<T, Float16Bits>;

template <typename T>
float to_float(T v) {
  if constexpr (std::is_same_v<T, BFloat16Bits>)
    return bf16_to_float(v.bits);
  else if constexpr (std::is_same_v<T, Float16Bits>)
    return fp16_to_float(v.bits);
  else
    return (float)v;
}

template <typename D, typename S>
D convert(S v) {
  if constexpr (std::is_same_v<D, S>)
    return v;
  else if constexpr (std::is_same_v<D, BFloat16Bits>)
    return {float_to_bf16(to_float(v))};
  else if constexpr (std::is_same_v<D, Float16Bits>)
    return {float_to_fp16(to_float(v))};
  else if constexpr (is_half_v<S>)
    return (D)to_float(v);
  else
    return (D)v;
}

// n values to float32 and back, each in a loop of its own that the compiler vectorises. Not
// inlined on purpose: inlined, GCC fuses widen -> relu -> narrow of fp16 into one scalar loop
// with a data-dependent branch (measured 60x slower on random signs).
// GCC leaves fp16 conversion loops scalar, so those use F16C's 8-wide instructions (the same
// conversions, round to nearest even, as the scalar ones).
template <typename T>
[[gnu::noinline]] void widen(const T* src, int64_t n, float* dst) {
  int64_t i = 0;
#if defined(__F16C__)
  if constexpr (std::is_same_v<T, Float16Bits>)
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(src + i))));
#endif
  for (; i < n; ++i) dst[i] = to_float(src[i]);
}
template <typename T>
[[gnu::noinline]] void narrow(const float* src, int64_t n, T* dst) {
  int64_t i = 0;
#if defined(__F16C__)
  if constexpr (std::is_same_v<T, Float16Bits>)
    for (; i + 8 <= n; i += 8)
      _mm_storeu_si128((__m128i*)(dst + i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; i < n; ++i) dst[i] = convert<T>(src[i]);
}

template <typename F>
void dispatch_dtype(DType t, F&& f) {
  detail::dispatch_dtype_as<BFloat16Bits, Float16Bits>(t, f);
}

// The same for a 16-bit float dtype only (T is BFloat16Bits or Float16Bits).
template <typename F>
void dispatch_half(DType t, F&& f) {
  if (t == DType::BFloat16)
    f.template operator()<BFloat16Bits>();
  else
    f.template operator()<Float16Bits>();
}

}  // namespace weft::cpu
