// random_split and Subset: the parts are disjoint and cover 0..n-1, equal PyTorch's
// torch.utils.data.random_split for the same seed (tests/golden/random_split), and a Subset
// yields its dataset's samples at its indices; bad lengths and indices are errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <sstream>

#include "golden.h"
#include "weft/data/subset.h"
#include "weft/weft.h"

using namespace weft;
using namespace weft::data;

// Keys: "split.<n>.<seed>.<l0>.<l1>..." (all parts' indices one after another) and
// "head.<n>.<seed>.<l0>.<l1>" (the first 256 indices of each part).
TEST(RandomSplit, SameAsPyTorch) {
  test::Golden g("random_split");
  int checked = 0;
  for (const auto& [key, want] : g.tensors) {
    std::istringstream parts(key);
    std::string kind, field;
    std::vector<uint64_t> v;
    std::getline(parts, kind, '.');
    while (std::getline(parts, field, '.')) v.push_back(std::stoull(field));
    ASSERT_GE(v.size(), 3u) << key;
    const std::vector<size_t> lengths(v.begin() + 2, v.end());
    const auto got = random_split(v[0], lengths, v[1]);
    ASSERT_EQ(got.size(), lengths.size()) << key;
    std::vector<int64_t> flat;
    for (size_t p = 0; p < got.size(); ++p) {
      ASSERT_EQ(got[p].size(), lengths[p]) << key;
      const size_t take = kind == "head" ? std::min<size_t>(256, got[p].size()) : got[p].size();
      flat.insert(flat.end(), got[p].begin(), got[p].begin() + (ptrdiff_t)take);
    }
    EXPECT_EQ(flat, want.to_vector_int64()) << key;
    ++checked;
  }
  EXPECT_EQ(checked, 13);
}

TEST(RandomSplit, PartsAreDisjointAndCoverEverything) {
  const auto parts = random_split(60000, {55000, 5000}, 3);
  std::vector<int64_t> all = parts[0];
  all.insert(all.end(), parts[1].begin(), parts[1].end());
  std::sort(all.begin(), all.end());
  std::vector<int64_t> want(60000);
  std::iota(want.begin(), want.end(), 0);
  EXPECT_EQ(all, want);
  // A pure function of (n, lengths, seed): asked again (another rank), the same; another seed
  // differs.
  EXPECT_EQ(random_split(60000, {55000, 5000}, 3), parts);
  EXPECT_NE(random_split(60000, {55000, 5000}, 4)[1], parts[1]);
  EXPECT_THROW(random_split(10, {5, 4}, 0), Error);
}

TEST(Subset, YieldsTheDatasetsSamplesAtItsIndices) {
  Tensor x = arange(0, 12, 1).reshape({6, 2}), y = arange(6);
  TensorDataset ds(x, y);
  Subset s(ds, {4, 1, 5});
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s.get(0).data.to_vector_float(), (std::vector<float>{8, 9}));
  EXPECT_EQ(s.get(2).target.item<int64_t>(), 5);
  EXPECT_THROW(s.get(3), Error);
  EXPECT_THROW(Subset(ds, {6}), Error);
  EXPECT_THROW(Subset(ds, {-1}), Error);
}
