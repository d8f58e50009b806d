// libFuzzer target for the IDX reader (plain and gzip). Any input must either parse or throw
// weft::Error, and a parsed array's data size must equal product(dims) * itemsize. The
// decompression cap is lowered to 64 MiB so that bombs are caught within the fuzzer's RSS limit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "weft/data/idx_format.h"
#include "weft/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  weft::data::IdxArray a;
  try {
    a = weft::data::parse_idx(data, size, size_t{64} << 20);
  } catch (const weft::Error&) {
    return 0;
  }
  uint64_t n = weft::data::idx_itemsize(a.type_code);
  for (int64_t d : a.dims) {
    if (d < 0) std::abort();
    n *= static_cast<uint64_t>(d);
  }
  if (a.dims.empty() || a.dims.size() > 8 || n != a.data.size()) std::abort();
  return 0;
}
