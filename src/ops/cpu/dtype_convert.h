// Internal to the CPU kernels: the C++ element type of each DType (the 16-bit floats as their
// bits), conversions between them (16-bit floats through float32, rounding to nearest even as
// PyTorch does; NaN stays NaN, overflow goes to inf) and dispatch_dtype, which calls a templated
// lambda with the element type of a runtime DType. The CUDA side is src/ops/cuda/dispatch.cuh.
#pragma once

#include <cstdint>
#include <type_traits>

#include "../dispatch_dtype.h"
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

template <typename F>
void dispatch_dtype(DType t, F&& f) {
  detail::dispatch_dtype_as<BFloat16Bits, Float16Bits>(t, f);
}

}  // namespace weft::cpu
