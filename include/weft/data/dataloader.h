// DataLoader: torch.utils.data.DataLoader for C++. Iterating it runs one epoch over a Dataset in
// the order of a Sampler, grouping samples into collated batches. Guarantees: with num_workers > 0
// background threads build batches ahead, yet the batches arrive in exactly the order and with
// exactly the content of num_workers = 0; an exception thrown by the dataset or collate is
// re-thrown (same type and message) in the iterating thread when its batch is reached; leaving
// the loop early (the last iterator of an epoch destroyed) or destroying the loader stops and
// joins that epoch's workers. A loader is iterated from one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <vector>

#include "weft/data/dataset.h"
#include "weft/data/sampler.h"

namespace weft::data {

// One collated batch; `auto& [x, y] = batch` binds data and target.
struct Batch {
  Tensor data;
  Tensor target;
};

using CollateFn = std::function<Batch(const std::vector<Example>&)>;

// Stacks the samples' data along a new dim 0 (weft::stack), and their targets likewise; the
// batch target stays undefined when the samples have none. Throws weft::Error on mixed shapes.
Batch default_collate(const std::vector<Example>& examples);

// Field order allows designated initializers in the common order:
// {.batch_size = 64, .shuffle = true, .sampler = &s, .drop_last = true, .num_workers = 2}.
struct DataLoaderOptions {
  int64_t batch_size = 1;
  // Without a sampler: visit the dataset in a RandomSampler(size, seed) order, new each epoch.
  bool shuffle = false;
  uint64_t seed = 0;
  // Overrides `shuffle`; not owned, must outlive the loader. Its epoch is the caller's to set
  // (sampler->set_epoch or loader.set_epoch).
  Sampler* sampler = nullptr;
  // Drop the last batch when it would be smaller than batch_size.
  bool drop_last = false;
  // Background threads building batches; 0 builds them in the iterating thread. Workers call
  // Dataset::get concurrently, so the dataset must be thread-safe (Dataset's contract).
  int num_workers = 0;
  // Batches in page-locked host memory (Tensor::pin_memory), so that moving them to a CUDA device
  // with to(device, non_blocking = true) overlaps with compute. Needs a CUDA device; without one
  // (or in a CPU-only build) it is accepted and ignored, as PyTorch does.
  bool pin_memory = false;
  // Empty means default_collate. Called from worker threads when num_workers > 0.
  CollateFn collate = {};
};

namespace detail {
class EpochRun;  // one epoch in progress: its index order, worker threads and queue
}

class DataLoader {
 public:
  // The loader refers to `dataset` (not owned): it must outlive the loader and its iterators.
  explicit DataLoader(const Dataset& dataset, DataLoaderOptions options = {});
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Input iterator over one epoch's batches. Copies share the same epoch.
  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    using pointer = Batch*;
    using reference = Batch&;

    Iterator() = default;
    Batch& operator*() const;
    Batch* operator->() const { return &**this; }
    Iterator& operator++();
    // Only comparison with end() (or between iterators of the same epoch) is meaningful.
    bool operator==(const Iterator& other) const;
    // Advancing an iterator whose epoch was stopped (its loader destroyed) throws weft::Error.

   private:
    friend class DataLoader;
    explicit Iterator(std::shared_ptr<detail::EpochRun> run) : run_(std::move(run)) {}
    bool at_end() const;
    std::shared_ptr<detail::EpochRun> run_;  // null for end()
  };

  // Starts an epoch: takes the sampler's indices for the current epoch, starts the workers and
  // returns an iterator at the first batch (so an error in batch 0 is thrown here). Epochs
  // started earlier and still referenced by iterators keep running independently. With shuffle and
  // no sampler, each begin() uses the next epoch number (0, 1, 2, ... or from set_epoch) so every
  // epoch is shuffled differently, yet reproducibly.
  Iterator begin();
  Iterator end() { return Iterator(); }

  // Number of batches per epoch.
  size_t len() const;
  size_t size() const { return len(); }
  // Forwards to the sampler (the user's, or the loader's own RandomSampler/SequentialSampler).
  void set_epoch(int64_t epoch);
  const DataLoaderOptions& options() const { return options_; }
  const Dataset& dataset() const { return dataset_; }

 private:
  const Dataset& dataset_;
  DataLoaderOptions options_;
  std::unique_ptr<Sampler> own_sampler_;  // when options_.sampler is null
  Sampler* sampler_;
  int64_t next_epoch_ = 0;  // for own_sampler_ only
  // Epochs owned by their iterators; the loader only stops those still alive when destroyed,
  // so that no worker outlives the loader (and, usually, the dataset next to it).
  std::vector<std::weak_ptr<detail::EpochRun>> runs_;
};

}  // namespace weft::data
