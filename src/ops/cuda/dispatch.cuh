// Internal to the CUDA kernels: the element type of each DType, conversions between them on the
// device (half types through float, rounding to nearest even as the CPU side does), and
// dispatch_dtype, which calls a templated lambda with the C++ type of a runtime DType.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "ops/dispatch_dtype.h"

namespace weft::cuda::detail {

template <typename F>
void dispatch_dtype(DType t, F&& f) {
  weft::detail::dispatch_dtype_as<__nv_bfloat16, __half>(t, f);
}

template <typename T>
__host__ __device__ __forceinline__ float to_float(T x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat162float(x);
  else if constexpr (std::is_same_v<T, __half>)
    return __half2float(x);
  else
    return (float)x;
}

template <typename D, typename S>
__device__ __forceinline__ D convert(S x) {
  if constexpr (std::is_same_v<D, S>)
    return x;
  else if constexpr (std::is_same_v<D, __nv_bfloat16>)
    return __float2bfloat16_rn(to_float(x));
  else if constexpr (std::is_same_v<D, __half>)
    return __float2half_rn(to_float(x));
  else if constexpr (std::is_same_v<S, __nv_bfloat16> || std::is_same_v<S, __half>)
    return (D)to_float(x);
  else
    return (D)x;
}

}  // namespace weft::cuda::detail
