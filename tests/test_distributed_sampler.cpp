// DistributedSampler: shards cover the dataset exactly once per epoch (plus PyTorch's
// padding), agree across ranks on the permutation, and change with the epoch.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "weft/data/distributed_sampler.h"

using namespace weft;
using namespace weft::data;

namespace {
std::vector<std::vector<int64_t>> shards(size_t n, int world, bool shuffle, bool drop_last,
                                         int64_t epoch) {
  std::vector<std::vector<int64_t>> out;
  for (int r = 0; r < world; ++r) {
    DistributedSampler s(
        n,
        {.num_replicas = world, .rank = r, .shuffle = shuffle, .seed = 7, .drop_last = drop_last});
    s.set_epoch(epoch);
    out.push_back(s.indices());
    EXPECT_EQ(out.back().size(), s.size());
  }
  return out;
}
}  // namespace

TEST(DistributedSampler, CoversDatasetExactlyOncePerEpoch) {
  for (int world : {1, 2, 3, 4})
    for (bool shuffle : {false, true}) {
      auto sh = shards(12, world, shuffle, false, 3);
      std::vector<int64_t> all;
      for (auto& s : sh) all.insert(all.end(), s.begin(), s.end());
      std::sort(all.begin(), all.end());
      std::vector<int64_t> expect(12);
      for (int i = 0; i < 12; ++i) expect[i] = i;
      EXPECT_EQ(all, expect) << "world " << world;
    }
}

TEST(DistributedSampler, PadsLikePyTorch) {
  // 10 samples over 4 ranks: 3 each, the first 2 indices repeated; without shuffle rank r
  // takes r, r+4, r+8 of [0..9, 0, 1].
  auto sh = shards(10, 4, false, false, 0);
  EXPECT_EQ(sh[0], (std::vector<int64_t>{0, 4, 8}));
  EXPECT_EQ(sh[1], (std::vector<int64_t>{1, 5, 9}));
  EXPECT_EQ(sh[2], (std::vector<int64_t>{2, 6, 0}));
  EXPECT_EQ(sh[3], (std::vector<int64_t>{3, 7, 1}));
  // Padding larger than the dataset cycles through it.
  auto tiny = shards(2, 5, false, false, 0);
  for (int r = 0; r < 5; ++r) EXPECT_EQ(tiny[r], (std::vector<int64_t>{r % 2}));
  // drop_last drops the tail instead: 10 over 4 -> 2 each, 8 distinct indices.
  auto dl = shards(10, 4, true, true, 0);
  std::map<int64_t, int> count;
  for (auto& s : dl) {
    EXPECT_EQ(s.size(), 2u);
    for (auto i : s) count[i]++;
  }
  EXPECT_EQ(count.size(), 8u);
}

TEST(DistributedSampler, EpochChangesOrderDeterministically) {
  auto e0 = shards(100, 2, true, false, 0), e1 = shards(100, 2, true, false, 1);
  EXPECT_NE(e0[0], e1[0]);
  EXPECT_EQ(e0, shards(100, 2, true, false, 0));
}

TEST(DistributedSampler, DefaultsAndErrors) {
  DistributedSampler s(10);  // no process group: one replica
  EXPECT_EQ(s.num_replicas(), 1);
  EXPECT_EQ(s.size(), 10u);
  set_default_replica_provider([] { return std::pair<int, int>{4, 3}; });
  DistributedSampler t(10);
  EXPECT_EQ(t.num_replicas(), 4);
  EXPECT_EQ(t.rank(), 3);
  set_default_replica_provider(nullptr);
  EXPECT_THROW(DistributedSampler(10, {.num_replicas = 2, .rank = 2}), Error);
  EXPECT_THROW(DistributedSampler(10, {.num_replicas = 0, .rank = 0}), Error);
}
