#include "weft/data/sampler.h"

#include "weft/generator.h"
#include "weft/ops.h"

namespace weft::data {

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
}  // namespace

uint64_t mix_seed(uint64_t seed, int64_t epoch) {
  // Hash the seed first so that (seed, epoch) and (seed + 1, epoch - 1) do not collide.
  return splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(epoch));
}

std::vector<int64_t> SequentialSampler::indices() const {
  std::vector<int64_t> out(n_);
  for (size_t i = 0; i < n_; ++i) out[i] = static_cast<int64_t>(i);
  return out;
}

std::vector<int64_t> RandomSampler::indices() const {
  // A fresh generator per call keeps indices() const and independent of any earlier draws.
  Generator gen(mix_seed(seed_, epoch_));
  return randperm(static_cast<int64_t>(n_), &gen).to_vector_int64();
}

}  // namespace weft::data
