// Test helper: an IDX file's bytes for `type` and `dims`, followed by `payload` (already
// big-endian), for the IDX parser and MNIST reader tests.
#pragma once

#include <cstdint>
#include <vector>

namespace weft::test {

inline std::vector<uint8_t> idx_bytes(uint8_t type, const std::vector<uint32_t>& dims,
                                      const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> out = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(d >> s));
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

}  // namespace weft::test
