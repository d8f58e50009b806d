// Element types a Tensor can hold. float32 and int64 have kernels of their own. bf16/fp16
// ("reduced" floats) are stored, converted (rounding as PyTorch), saved, loaded and all-reduced,
// and every float op accepts them: it computes in float32 on exact widened copies and rounds each
// result once, PyTorch's rule for them (its "opmath" type is float).
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>

namespace weft {

enum class DType : uint8_t { Float32, Int64, BFloat16, Float16 };

inline constexpr DType kFloat32 = DType::Float32;
inline constexpr DType kInt64 = DType::Int64;

inline bool is_reduced_float(DType t) { return t == DType::BFloat16 || t == DType::Float16; }
inline bool is_floating_point(DType t) { return t != DType::Int64; }

inline size_t itemsize(DType t) {
  switch (t) {
    case DType::Float32:
      return 4;
    case DType::Int64:
      return 8;
    case DType::BFloat16:
    case DType::Float16:
      return 2;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32:
      return "float32";
    case DType::Int64:
      return "int64";
    case DType::BFloat16:
      return "bfloat16";
    case DType::Float16:
      return "float16";
  }
  return "?";
}

inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

}  // namespace weft
