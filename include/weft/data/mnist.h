// MNIST (and drop-in look-alikes such as Fashion-MNIST) read from the IDX files
// train-images-idx3-ubyte / train-labels-idx1-ubyte (or t10k-*), plain or .gz, into memory.
// Guarantees: images are float32 [N, 1, 28, 28] in [0, 1] (or normalized), labels int64 [N] in
// 0..9; a missing file, a wrong type code or shape, an image/label count mismatch or a label
// outside 0..9 is a weft::Error naming the file. get() only reads, so it is thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "weft/data/dataset.h"

namespace weft::data {

struct MNISTOptions {
  // Apply (x - mean) / std after scaling to [0, 1]. The defaults are MNIST's training-set
  // statistics (torchvision's); Fashion-MNIST's are mean 0.2860, std 0.3530.
  bool normalize = false;
  double mean = 0.1307;
  double std = 0.3081;
  // Keep only the first `limit` samples (all of them when unset or larger than the file).
  std::optional<int64_t> limit = std::nullopt;
};

class MNIST : public Dataset {
 public:
  // Reads `root`/train-* when `train`, else `root`/t10k-*; each file may be plain or .gz
  // (the plain one is preferred when both exist).
  explicit MNIST(const std::string& root, bool train = true, MNISTOptions options = {});
  size_t size() const override { return static_cast<size_t>(labels_.size(0)); }
  // data: float32 [1, 28, 28] (a view of images()), target: int64 scalar.
  Example get(size_t index) const override;
  const Tensor& images() const { return images_; }  // float32 [N, 1, 28, 28]
  const Tensor& labels() const { return labels_; }  // int64 [N]

 private:
  Tensor images_, labels_;
};

}  // namespace weft::data
