// CIFAR-10 read from its binary distribution (cifar-10-binary.tar.gz, extracted):
// data_batch_1.bin .. data_batch_5.bin for training, test_batch.bin for testing, in `root` or in
// `root`/cifar-10-batches-bin. Each record is 1 label byte and 3072 pixel bytes (the red, green,
// then blue 32x32 planes, row-major). Guarantees: images float32 [N, 3, 32, 32] in [0, 1] (or
// normalized per channel), labels int64 [N] in 0..9; a missing file, a size that is not a whole
// number of records, or a label outside 0..9 is a weft::Error naming the file (and the record).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "weft/data/dataset.h"

namespace weft::data {

struct CIFAR10Options {
  // Apply (x - mean[c]) / std[c] per channel after scaling to [0, 1]. The defaults are the
  // training set's per-channel statistics.
  bool normalize = false;
  std::array<double, 3> mean = {0.4914, 0.4822, 0.4465};
  std::array<double, 3> std = {0.2470, 0.2435, 0.2616};
  // Keep only the first `limit` samples (all of them when unset or larger).
  std::optional<int64_t> limit = std::nullopt;
};

class CIFAR10 : public Dataset {
 public:
  explicit CIFAR10(const std::string& root, bool train = true, CIFAR10Options options = {});
  size_t size() const override { return static_cast<size_t>(labels_.size(0)); }
  // data: float32 [3, 32, 32] (a view of images()), target: int64 scalar.
  Example get(size_t index) const override;
  const Tensor& images() const { return images_; }  // float32 [N, 3, 32, 32]
  const Tensor& labels() const { return labels_; }  // int64 [N]

 private:
  Tensor images_, labels_;
};

}  // namespace weft::data
