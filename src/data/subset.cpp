#include "weft/data/subset.h"

#include "data/torch_randperm.h"

namespace weft::data {

Subset::Subset(const Dataset& dataset, std::vector<int64_t> indices)
    : dataset_(dataset), indices_(std::move(indices)) {
  for (int64_t i : indices_)
    WEFT_CHECK(i >= 0 && (size_t)i < dataset_.size(), "Subset: index ", i,
               " out of range for a dataset of ", dataset_.size(), " samples");
}

Example Subset::get(size_t index) const {
  WEFT_CHECK(index < indices_.size(), "Subset: index ", index, " out of range for ",
             indices_.size(), " samples");
  return dataset_.get((size_t)indices_[index]);
}

std::vector<std::vector<int64_t>> random_split(size_t n, const std::vector<size_t>& lengths,
                                               uint64_t seed) {
  size_t total = 0;
  for (size_t l : lengths) total += l;
  WEFT_CHECK(total == n, "random_split: the lengths add up to ", total, ", not the ", n,
             " samples to split");
  const std::vector<int64_t> perm = detail::torch_randperm((int64_t)n, seed);
  std::vector<std::vector<int64_t>> parts;
  size_t offset = 0;
  for (size_t l : lengths) {
    parts.emplace_back(perm.begin() + (ptrdiff_t)offset, perm.begin() + (ptrdiff_t)(offset + l));
    offset += l;
  }
  return parts;
}

}  // namespace weft::data
