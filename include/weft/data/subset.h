// Subset and random_split, as torch.utils.data's: a Subset is a dataset seen through a list of
// indices (no copy); random_split(n, lengths, seed) splits 0..n-1 into disjoint index lists of
// those lengths, exactly as torch.utils.data.random_split(range(n), lengths,
// generator=torch.Generator().manual_seed(seed)) does (PyTorch's randperm, split in order). The
// split is a pure function of (n, lengths, seed): every process that asks gets the same lists.
#pragma once

#include <cstdint>
#include <vector>

#include "weft/data/dataset.h"

namespace weft::data {

class Subset : public Dataset {
 public:
  // Every index must be below dataset.size(); `dataset` must outlive the Subset.
  Subset(const Dataset& dataset, std::vector<int64_t> indices);
  size_t size() const override { return indices_.size(); }
  Example get(size_t index) const override;
  const std::vector<int64_t>& indices() const { return indices_; }
  const Dataset& dataset() const { return dataset_; }

 private:
  const Dataset& dataset_;
  std::vector<int64_t> indices_;
};

// The lengths must add up to n.
std::vector<std::vector<int64_t>> random_split(size_t n, const std::vector<size_t>& lengths,
                                               uint64_t seed);

}  // namespace weft::data
