#include "weft/data/dataloader.h"

#include <omp.h>

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

#include "weft/cuda.h"
#include "weft/error.h"
#include "weft/ops.h"

namespace weft::data {

Batch default_collate(const std::vector<Example>& examples) {
  WEFT_CHECK(!examples.empty(), "default_collate: empty batch");
  const bool has_target = examples[0].target.defined();
  std::vector<Tensor> data, target;
  data.reserve(examples.size());
  if (has_target) target.reserve(examples.size());
  for (size_t i = 0; i < examples.size(); ++i) {
    WEFT_CHECK(examples[i].data.defined(), "default_collate: sample ", i, " has no data");
    WEFT_CHECK(
        examples[i].target.defined() == has_target, "default_collate: sample ", i,
        has_target ? " has no target but sample 0 has one" : " has a target but sample 0 has none");
    data.push_back(examples[i].data);
    if (has_target) target.push_back(examples[i].target);
  }
  return {stack(data, 0), has_target ? stack(target, 0) : Tensor()};
}

namespace detail {

// One epoch. Batch b holds indices [b*batch_size, min((b+1)*batch_size, n)). Workers claim
// batch numbers in increasing order, at most `capacity_` ahead of the one the consumer waits
// for, and park finished batches in `ready_` keyed by number; the consumer takes them strictly
// in order. That makes the delivered sequence identical to num_workers = 0 whatever the timing.
class EpochRun {
 public:
  EpochRun(const Dataset& dataset, const CollateFn& collate, std::vector<int64_t> indices,
           int64_t batch_size, size_t num_batches, int num_workers, bool pin_memory)
      : dataset_(dataset),
        collate_(collate),
        pin_memory_(pin_memory),
        indices_(std::move(indices)),
        batch_size_(static_cast<size_t>(batch_size)),
        num_batches_(num_batches),
        // Two batches in flight per worker, as PyTorch's default prefetch_factor.
        capacity_(2 * static_cast<size_t>(num_workers)) {
    try {
      for (int w = 0; w < num_workers && static_cast<size_t>(w) < num_batches_; ++w)
        threads_.emplace_back([this] { worker_loop(); });
    } catch (...) {
      stop();
      throw;
    }
  }
  ~EpochRun() { stop(); }
  EpochRun(const EpochRun&) = delete;
  EpochRun& operator=(const EpochRun&) = delete;

  bool done() const { return pos_ >= num_batches_; }
  Batch& current() {
    WEFT_CHECK(!done(), "DataLoader: dereferencing an iterator at the end of the epoch");
    return current_;
  }

  // Loads batch `pos_` into current_ (the first one, or the next after advance()).
  void load() {
    if (done()) {
      current_ = Batch();
      stop();  // every batch delivered: let the workers go now rather than at destruction
      return;
    }
    try {
      current_ = fetch(pos_);
    } catch (...) {
      // The epoch ends at the failing batch, as a Python loop does when next() raises.
      pos_ = num_batches_;
      current_ = Batch();
      stop();
      throw;
    }
  }
  void advance() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      WEFT_CHECK(!stopped_ || done(),
                 "DataLoader: this epoch was stopped (its DataLoader was destroyed); start a new "
                 "one with begin()");
    }
    WEFT_CHECK(!done(), "DataLoader: advancing an iterator past the end of the epoch");
    ++pos_;
    load();
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopped_ = true;
    }
    work_cv_.notify_all();
    ready_cv_.notify_all();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    threads_.clear();
    ready_.clear();
  }

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };

  Batch build(size_t b) const {
    const size_t begin = b * batch_size_;
    const size_t end = std::min(begin + batch_size_, indices_.size());
    const size_t n = dataset_.size();
    std::vector<Example> examples;
    examples.reserve(end - begin);
    for (size_t i = begin; i < end; ++i) {
      const int64_t k = indices_[i];
      WEFT_CHECK(k >= 0 && static_cast<size_t>(k) < n, "DataLoader: the sampler produced index ", k,
                 " but the dataset has ", n, " samples");
      examples.push_back(dataset_.get(static_cast<size_t>(k)));
    }
    Batch batch = collate_ ? collate_(examples) : default_collate(examples);
    if (pin_memory_) {
      // Page-locked batches let the training loop's .to(cuda, non_blocking) overlap the copy.
      if (batch.data.defined() && batch.data.device().is_cpu())
        batch.data = batch.data.pin_memory();
      if (batch.target.defined() && batch.target.device().is_cpu())
        batch.target = batch.target.pin_memory();
    }
    return batch;
  }

  Batch fetch(size_t b) {
    if (threads_.empty()) return build(b);
    std::unique_lock<std::mutex> lock(mu_);
    ready_cv_.wait(lock, [&] { return stopped_ || ready_.count(b) > 0; });
    WEFT_CHECK(!stopped_, "DataLoader: this epoch was stopped while waiting for batch ", b);
    Slot slot = std::move(ready_.extract(b).mapped());
    want_ = b + 1;  // frees one prefetch slot
    lock.unlock();
    work_cv_.notify_all();
    if (slot.error) std::rethrow_exception(slot.error);
    return std::move(slot.batch);
  }

  void worker_loop() {
    // Parallelism comes from the workers; kernels inside a worker (stack in collate) run on
    // one thread so that N workers do not each start a full OpenMP team, as PyTorch does.
    omp_set_num_threads(1);
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      work_cv_.wait(lock, [&] {
        return stopped_ || next_claim_ >= num_batches_ || next_claim_ < want_ + capacity_;
      });
      if (stopped_ || next_claim_ >= num_batches_) return;
      const size_t b = next_claim_++;
      lock.unlock();
      Slot slot;
      try {
        slot.batch = build(b);
      } catch (...) {
        slot.error = std::current_exception();
      }
      lock.lock();
      if (stopped_) return;
      ready_.emplace(b, std::move(slot));
      ready_cv_.notify_one();
    }
  }

  const Dataset& dataset_;
  const CollateFn collate_;
  const bool pin_memory_;
  const std::vector<int64_t> indices_;
  const size_t batch_size_;
  const size_t num_batches_;
  const size_t capacity_;

  // Consumer side (the iterating thread only).
  size_t pos_ = 0;
  Batch current_;

  std::mutex mu_;
  std::condition_variable work_cv_;   // workers wait for a free prefetch slot
  std::condition_variable ready_cv_;  // the consumer waits for its batch
  bool stopped_ = false;
  size_t next_claim_ = 0;  // next batch number a worker will build
  size_t want_ = 0;        // the batch the consumer takes next
  std::map<size_t, Slot> ready_;
  std::vector<std::thread> threads_;
};

}  // namespace detail

// --- Iterator ---

bool DataLoader::Iterator::at_end() const { return !run_ || run_->done(); }

Batch& DataLoader::Iterator::operator*() const {
  WEFT_CHECK(run_, "DataLoader: dereferencing the end() iterator");
  return run_->current();
}

DataLoader::Iterator& DataLoader::Iterator::operator++() {
  WEFT_CHECK(run_, "DataLoader: advancing the end() iterator");
  run_->advance();
  return *this;
}

bool DataLoader::Iterator::operator==(const Iterator& other) const {
  if (at_end() || other.at_end()) return at_end() && other.at_end();
  return run_ == other.run_;
}

// --- DataLoader ---

DataLoader::DataLoader(const Dataset& dataset, DataLoaderOptions options)
    : dataset_(dataset), options_(std::move(options)), sampler_(options_.sampler) {
  WEFT_CHECK(options_.batch_size >= 1, "DataLoader: batch_size must be >= 1, got ",
             options_.batch_size);
  WEFT_CHECK(options_.num_workers >= 0, "DataLoader: num_workers must be >= 0, got ",
             options_.num_workers);
  if (!sampler_) {
    if (options_.shuffle)
      own_sampler_ = std::make_unique<RandomSampler>(dataset_.size(), options_.seed);
    else
      own_sampler_ = std::make_unique<SequentialSampler>(dataset_.size());
    sampler_ = own_sampler_.get();
  }
}

DataLoader::~DataLoader() {
  for (auto& weak : runs_)
    if (auto run = weak.lock()) run->stop();
}

DataLoader::Iterator DataLoader::begin() {
  std::erase_if(runs_, [](const std::weak_ptr<detail::EpochRun>& w) { return w.expired(); });
  // The loader's own sampler moves to a new epoch on every pass; a user's sampler is left at
  // the epoch the user set (DistributedSampler-style).
  if (own_sampler_) own_sampler_->set_epoch(next_epoch_++);
  std::vector<int64_t> indices = sampler_->indices();
  const size_t n = indices.size();
  const auto bs = static_cast<size_t>(options_.batch_size);
  const size_t num_batches = options_.drop_last ? n / bs : (n + bs - 1) / bs;
  // Pinning needs a CUDA device; elsewhere the flag is accepted and ignored, as in PyTorch.
  const bool pin = options_.pin_memory && cuda::is_available();
  auto run = std::make_shared<detail::EpochRun>(dataset_, options_.collate, std::move(indices),
                                                options_.batch_size, num_batches,
                                                options_.num_workers, pin);
  run->load();
  runs_.push_back(run);
  return Iterator(std::move(run));
}

size_t DataLoader::len() const {
  const size_t n = sampler_->size();
  const auto bs = static_cast<size_t>(options_.batch_size);
  return options_.drop_last ? n / bs : (n + bs - 1) / bs;
}

void DataLoader::set_epoch(int64_t epoch) {
  sampler_->set_epoch(epoch);
  if (own_sampler_) next_epoch_ = epoch;
}

}  // namespace weft::data
