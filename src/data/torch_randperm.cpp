// PyTorch's CPU randperm (aten/src/ATen/native/TensorFactories.cpp, randperm_cpu): a
// Fisher-Yates shuffle of 0..n-1 where step i swaps element i with element i + r % (n - i), r
// the generator's next 32-bit draw. The CPU generator is a standard mt19937 whose manual_seed
// keeps the seed's low 32 bits (at::mt19937's init_with_uint32), as std::mt19937 is seeded.
#include "data/torch_randperm.h"

#include <random>
#include <utility>

#include "weft/error.h"

namespace weft::data::detail {

std::vector<int64_t> torch_randperm(int64_t n, uint64_t seed) {
  WEFT_CHECK(n >= 0, "torch_randperm: n must be non-negative, got ", n);
  std::mt19937 engine(static_cast<uint32_t>(seed & 0xffffffffu));
  std::vector<int64_t> r(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) r[i] = i;
  for (int64_t i = 0; i + 1 < n; ++i) {
    const int64_t z = static_cast<int64_t>(engine() % static_cast<uint64_t>(n - i));
    std::swap(r[i], r[z + i]);
  }
  return r;
}

}  // namespace weft::data::detail
