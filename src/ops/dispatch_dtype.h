// Internal to the kernels: dispatch_dtype_as calls f.template operator()<T>() with the element
// type T of a runtime DType, the 16-bit float types being the caller's own (bit structs on the
// CPU, cuda_bf16.h/cuda_fp16.h types on the GPU), so both backends share one switch.
#pragma once

#include <cstdint>

#include "weft/dtype.h"
#include "weft/error.h"

namespace weft::detail {

template <typename BF16, typename F16, typename F>
void dispatch_dtype_as(DType t, F&& f) {
  switch (t) {
    case DType::Float32:
      f.template operator()<float>();
      return;
    case DType::Int64:
      f.template operator()<int64_t>();
      return;
    case DType::BFloat16:
      f.template operator()<BF16>();
      return;
    case DType::Float16:
      f.template operator()<F16>();
      return;
  }
  WEFT_ERROR("unsupported dtype ", t);
}

}  // namespace weft::detail
