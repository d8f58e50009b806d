// DistributedSampler: each of num_replicas ranks visits its own 1/num_replicas of the
// dataset per epoch, as torch.utils.data.DistributedSampler: one permutation per (seed,
// epoch) shared by all ranks, padded by repeating its start (or truncated with drop_last)
// to a multiple of num_replicas, then rank r takes every num_replicas-th index from r.
// The permutation is PyTorch's own (torch.randperm on a CPU generator seeded with seed +
// epoch), so a job moved from PyTorch sees the same shards for the same seed and epoch.
// Every rank must call set_epoch(e) with the same e, or ranks see different permutations.
#pragma once

#include <functional>
#include <utility>

#include "weft/data/dataset.h"
#include "weft/data/sampler.h"

namespace weft::data {

struct DistributedSamplerOptions {
  int num_replicas = -1;  // -1: the default process group's world size
  int rank = -1;          // -1: this process's rank in the default group
  bool shuffle = true;
  uint64_t seed = 0;
  bool drop_last = false;
};

class DistributedSampler : public Sampler {
 public:
  DistributedSampler(const Dataset& dataset, DistributedSamplerOptions options = {})
      : DistributedSampler(dataset.size(), options) {}
  DistributedSampler(size_t dataset_size, DistributedSamplerOptions options = {});
  std::vector<int64_t> indices() const override;
  size_t size() const override { return num_samples_; }
  int num_replicas() const { return num_replicas_; }
  int rank() const { return rank_; }

 private:
  size_t n_, num_samples_, total_size_;
  int num_replicas_, rank_;
  DistributedSamplerOptions options_;
};

// Where num_replicas/rank defaults come from: weft::dist registers its default group here
// when it is initialised, so that the data layer does not depend on the distributed one.
// Without a provider the defaults are (1 replica, rank 0).
void set_default_replica_provider(std::function<std::pair<int, int>()> provider);

}  // namespace weft::data
