// DistributedSampler: shards cover the dataset exactly once per epoch (plus PyTorch's
// padding), agree across ranks on the permutation, change with the epoch, and equal
// PyTorch's own shards for the same seed and epoch (tests/golden/distributed_sampler).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <sstream>

#include "data/torch_randperm.h"
#include "golden.h"
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

// The golden's keys: "shards.<n>.<seed>.<epoch>.<world>.<drop_last>" (row r: rank r's indices)
// and "head.<...>" (the first indices of rank 0), written by PyTorch's DistributedSampler.
TEST(DistributedSampler, SameShardsAsPyTorch) {
  test::Golden g("distributed_sampler");
  int checked = 0;
  for (const auto& [key, want] : g.tensors) {
    std::istringstream parts(key);
    std::string kind, field;
    std::vector<uint64_t> v;
    std::getline(parts, kind, '.');
    while (std::getline(parts, field, '.')) v.push_back(std::stoull(field));
    ASSERT_EQ(v.size(), 5u) << key;
    const auto [n, seed, epoch, world, drop_last] = std::tuple(v[0], v[1], v[2], v[3], v[4]);
    const std::vector<int64_t> rows = want.to_vector_int64();
    const size_t width = kind == "head" ? rows.size() : rows.size() / world;
    for (size_t r = 0; r < (kind == "head" ? 1 : world); ++r) {
      DistributedSampler s(n, {.num_replicas = (int)world,
                               .rank = (int)r,
                               .shuffle = true,
                               .seed = seed,
                               .drop_last = drop_last != 0});
      s.set_epoch((int64_t)epoch);
      std::vector<int64_t> got = s.indices();
      if (kind == "head") got.resize(width);
      EXPECT_EQ(got, std::vector<int64_t>(rows.begin() + r * width, rows.begin() + (r + 1) * width))
          << key << " rank " << r;
      ++checked;
    }
  }
  EXPECT_GT(checked, 300);
}

TEST(DistributedSampler, TorchRandpermIsAPermutationOfTheSeedsLow32Bits) {
  // torch.randperm(10) after manual_seed(0), as Python prints it.
  EXPECT_EQ(data::detail::torch_randperm(10, 0),
            (std::vector<int64_t>{4, 1, 7, 5, 3, 9, 0, 8, 6, 2}));
  EXPECT_EQ(data::detail::torch_randperm(50, 3),
            data::detail::torch_randperm(50, (1ull << 32) + 3));
  for (int64_t n : {0, 1, 2, 97}) {
    auto p = data::detail::torch_randperm(n, 11);
    std::sort(p.begin(), p.end());
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(p[i], i);
  }
}
