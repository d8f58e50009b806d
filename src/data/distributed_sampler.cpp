#include "weft/data/distributed_sampler.h"

#include <mutex>

#include "data/torch_randperm.h"

namespace weft::data {

namespace {
std::mutex g_provider_mu;
std::function<std::pair<int, int>()> g_provider;
}  // namespace

void set_default_replica_provider(std::function<std::pair<int, int>()> provider) {
  std::lock_guard<std::mutex> lk(g_provider_mu);
  g_provider = std::move(provider);
}

DistributedSampler::DistributedSampler(size_t n, DistributedSamplerOptions o)
    : n_(n), num_replicas_(o.num_replicas), rank_(o.rank), options_(o) {
  if (num_replicas_ < 0 || rank_ < 0) {
    std::pair<int, int> world{1, 0};
    {
      std::lock_guard<std::mutex> lk(g_provider_mu);
      if (g_provider) world = g_provider();
    }
    if (num_replicas_ < 0) num_replicas_ = world.first;
    if (rank_ < 0) rank_ = world.second;
  }
  WEFT_CHECK(num_replicas_ >= 1, "DistributedSampler: num_replicas must be >= 1, got ",
             num_replicas_);
  WEFT_CHECK(rank_ >= 0 && rank_ < num_replicas_, "DistributedSampler: invalid rank ", rank_,
             ", rank should be in the interval [0, ", num_replicas_ - 1, "]");
  const size_t R = (size_t)num_replicas_;
  if (o.drop_last && n_ % R != 0)
    num_samples_ = n_ >= R ? (n_ - R + R - 1) / R : 0;
  else
    num_samples_ = (n_ + R - 1) / R;
  total_size_ = num_samples_ * R;
}

std::vector<int64_t> DistributedSampler::indices() const {
  std::vector<int64_t> all;
  if (options_.shuffle) {
    // PyTorch's order: randperm on a CPU generator seeded with seed + epoch.
    all = detail::torch_randperm((int64_t)n_, options_.seed + static_cast<uint64_t>(epoch_));
  } else {
    all.resize(n_);
    for (size_t i = 0; i < n_; ++i) all[i] = (int64_t)i;
  }
  if (all.size() < total_size_) {
    WEFT_CHECK(!all.empty(), "DistributedSampler: the dataset is empty");
    // Pad by repeating from the start (cycling if the padding exceeds the dataset).
    for (size_t i = 0; all.size() < total_size_; ++i) all.push_back(all[i]);
  } else {
    all.resize(total_size_);
  }
  std::vector<int64_t> mine;
  mine.reserve(num_samples_);
  for (size_t i = (size_t)rank_; i < total_size_; i += (size_t)num_replicas_)
    mine.push_back(all[i]);
  return mine;
}

}  // namespace weft::data
