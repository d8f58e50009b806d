// Conversions between float32 and the 16-bit floats weft stores (fp16, bf16), rounding to
// nearest even; NaN stays NaN. Used by the half-precision communication hooks and backends.
#pragma once

#include <cstdint>
#include <cstring>

namespace weft {

inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  // A select rather than a branch, so that loops over this vectorise.
  const uint32_t nan = (u >> 16) | 0x40;  // quiet NaN
  const uint32_t rounded = (u + 0x7fff + ((u >> 16) & 1)) >> 16;
  return (uint16_t)((u & 0x7fffffff) > 0x7f800000 ? nan : rounded);
}

inline float bf16_to_float(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t float_to_fp16(float f) {
  _Float16 h = (_Float16)f;
  uint16_t out;
  std::memcpy(&out, &h, 2);
  return out;
}

inline float fp16_to_float(uint16_t bits) {
  _Float16 h;
  std::memcpy(&h, &bits, 2);
  return (float)h;
}

}  // namespace weft
