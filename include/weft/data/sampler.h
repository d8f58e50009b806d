// Samplers choose the order in which a DataLoader visits a dataset, one epoch at a time.
// Guarantees: indices() is a pure function of the sampler's settings and its current epoch, so
// a run resumed at epoch e (set_epoch(e)) sees exactly the order the uninterrupted run saw.
// RandomSampler's order for epoch e depends only on (seed, e), never on the global generator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace weft::data {

class Sampler {
 public:
  virtual ~Sampler() = default;
  // The dataset indices of the current epoch, in visiting order.
  virtual std::vector<int64_t> indices() const = 0;
  // Number of indices one epoch yields (what indices().size() returns).
  virtual size_t size() const = 0;
  // Selects the epoch whose order indices() returns. Samplers whose order does not depend
  // on the epoch just remember it.
  virtual void set_epoch(int64_t epoch) { epoch_ = epoch; }
  int64_t epoch() const { return epoch_; }

 protected:
  int64_t epoch_ = 0;
};

// 0, 1, ..., n-1 every epoch.
class SequentialSampler : public Sampler {
 public:
  explicit SequentialSampler(size_t n) : n_(n) {}
  std::vector<int64_t> indices() const override;
  size_t size() const override { return n_; }

 private:
  size_t n_;
};

// A permutation of 0..n-1 drawn from a Generator seeded by a mix of (seed, epoch).
class RandomSampler : public Sampler {
 public:
  explicit RandomSampler(size_t n, uint64_t seed = 0) : n_(n), seed_(seed) {}
  std::vector<int64_t> indices() const override;
  size_t size() const override { return n_; }
  uint64_t seed() const { return seed_; }

 private:
  size_t n_;
  uint64_t seed_;
};

// The Generator seed used for (seed, epoch): both words pass through splitmix64 so that
// neighbouring seeds and epochs give unrelated streams. Exposed for samplers built on it.
uint64_t mix_seed(uint64_t seed, int64_t epoch);

}  // namespace weft::data
