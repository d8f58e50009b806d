// Dataset: the map-style dataset interface of torch.utils.data (size() and get(i)), and
// TensorDataset over tensors indexed along dim 0. Guarantees: constructors check shapes and
// get() checks its index, throwing weft::Error naming them. A DataLoader with num_workers > 0
// calls get() from several threads at once, so get() must be safe to call concurrently.
#pragma once

#include <cstddef>
#include <utility>

#include "weft/tensor.h"

namespace weft::data {

// One sample. `target` may be undefined for unlabelled data.
struct Example {
  Tensor data;
  Tensor target;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  // Sample `index` (0 <= index < size()). Const because DataLoader workers call it from
  // several threads; a dataset that caches or reads files must do its own locking.
  virtual Example get(size_t index) const = 0;
};

// Samples are data[i] and target[i] (views sharing the tensors' storage, like PyTorch).
class TensorDataset : public Dataset {
 public:
  // `data` and `target` need at least one dimension and the same size along dim 0;
  // `target` may be left undefined.
  explicit TensorDataset(Tensor data, Tensor target = Tensor())
      : data_(std::move(data)), target_(std::move(target)) {
    WEFT_CHECK(data_.defined(), "TensorDataset: data tensor is undefined");
    WEFT_CHECK(data_.dim() >= 1, "TensorDataset: data must have at least one dimension (the ",
               "sample dimension), got ", data_.str());
    if (target_.defined()) {
      WEFT_CHECK(target_.dim() >= 1, "TensorDataset: target must have at least one dimension, got ",
                 target_.str());
      WEFT_CHECK(target_.size(0) == data_.size(0), "TensorDataset: data has ", data_.size(0),
                 " samples (", data_.str(), ") but target has ", target_.size(0), " (",
                 target_.str(), ")");
    }
  }
  size_t size() const override { return static_cast<size_t>(data_.size(0)); }
  Example get(size_t index) const override {
    WEFT_CHECK(index < size(), "TensorDataset: index ", index, " out of range for ", size(),
               " samples");
    const auto i = static_cast<int64_t>(index);
    return {data_[i], target_.defined() ? target_[i] : Tensor()};
  }
  const Tensor& data() const { return data_; }
  const Tensor& target() const { return target_; }

 private:
  Tensor data_, target_;
};

}  // namespace weft::data
