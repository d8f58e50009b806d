// Symmetric buffers (Note [Symmetric buffers] in docs/ARCHITECTURE.md), one host's ranks as
// threads: the rendezvous through a store, and the in-place all-reduce over views of every rank's
// buffer, and the one into a separate output, against the staged all-reduce of the same data (bit
// for bit) and the rank-order sum; ranks that pass different views, or one a symmetric view and
// one an ordinary tensor, fail naming the peer. Real processes: tests/distributed/shm_worker.cpp
// (test_shm_allreduce.cpp).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "distributed/shm/symmetric.h"
#include "shm_host.h"

namespace {

using namespace weft;
using namespace weft::dist;
using weft::test::long_deadline;
using weft::test::ShmHost;

// Rank r's part of a new symmetric buffer, made collectively through the host's ShmGroup.
std::shared_ptr<shm::SymmetricBuffer> make(ShmHost& host, int r, uint64_t id, size_t bytes) {
  return shm::SymmetricBuffer::make(*host.ranks[r], id, bytes, long_deadline());
}

float input(int r, size_t i) { return 0.25f * r + 1e-4f * static_cast<float>(i % 1013) - 0.3f; }

TEST(ShmGroup, SymmetricAllreduceEqualsStagedBitForBit) {
  for (int n : {2, 3, 4}) {
    ShmHost host(n, 4096);
    const size_t total = 3 * 16384 + 1001;
    // (first element, count): the whole buffer, an unaligned view over many pieces, a tiny one.
    const std::pair<size_t, size_t> views[] = {{0, total}, {37, 20001}, {total - 5, 5}};
    std::vector<std::vector<float>> result(n), staged(n);
    auto errors = host.run([&](int r) {
      auto buf = make(host, r, 1, total * sizeof(float));
      ASSERT_TRUE(buf) << "rank " << r;
      auto* mine = reinterpret_cast<float*>(buf->mine());
      for (size_t i = 0; i < total; ++i) ASSERT_EQ(mine[i], 0.0f) << "not zero-filled at " << i;
      staged[r].resize(total);
      for (ReduceOp op : {ReduceOp::SUM, ReduceOp::AVG, ReduceOp::MAX})
        for (auto [first, count] : views) {
          for (size_t i = 0; i < total; ++i) mine[i] = staged[r][i] = input(r, i);
          const auto dl = long_deadline();
          size_t offset = 0;  // the view's byte offset, as IntraHost finds it
          ASSERT_TRUE(buf->holds(mine + first, count * 4, offset));
          ASSERT_EQ(offset, first * 4);
          host.ranks[r]->allreduce_symmetric(*buf, offset, count, kFloat32, op, dl);
          host.ranks[r]->allreduce(staged[r].data() + first, count, kFloat32, op, dl);
          ASSERT_EQ(std::memcmp(mine, staged[r].data(), total * 4), 0)
              << "n=" << n << " " << to_string(op) << " view at " << first << " rank " << r;
          // Into a separate output (Note [All-reduce into a separate output]): the same bits.
          for (size_t i = 0; i < total; ++i) mine[i] = input(r, i);
          std::vector<float> out(count, -1.0f);
          host.ranks[r]->allreduce_symmetric(*buf, offset, count, kFloat32, op, dl, out.data());
          ASSERT_EQ(std::memcmp(out.data(), staged[r].data() + first, count * 4), 0)
              << "into an output: n=" << n << " " << to_string(op) << " view at " << first
              << " rank " << r;
        }
      size_t offset = 0;
      ASSERT_FALSE(buf->holds(mine + total - 1, 8, offset));  // past its end
      for (size_t i = 0; i < total; ++i) mine[i] = input(r, i);
      host.ranks[r]->allreduce_symmetric(*buf, 0, total, kFloat32, ReduceOp::SUM, long_deadline());
      result[r].assign(mine, mine + total);
    });
    for (int r = 0; r < n; ++r) {
      ASSERT_EQ(errors[r], "") << r;
      for (size_t i = 0; i < total; ++i) {
        float sum = input(0, i);
        for (int q = 1; q < n; ++q) sum += input(q, i);
        ASSERT_EQ(std::memcmp(&result[r][i], &sum, 4), 0) << "n=" << n << " rank " << r << " " << i;
      }
    }
  }
}

TEST(ShmGroup, SymmetricViewsThatDifferNameThePeer) {
  ShmHost host(2, 4096);
  auto errors = host.run([&](int r) {
    auto buf = make(host, r, 2, 4096);
    ASSERT_TRUE(buf);
    host.ranks[r]->allreduce_symmetric(*buf, 64 * r, 100, kFloat32, ReduceOp::SUM, long_deadline());
  });
  EXPECT_NE(errors[0].find("rank 11 passed symmetric buffer 2 at byte 64 while rank 10 passed "
                           "buffer 2 at byte 0"),
            std::string::npos)
      << errors[0];
  EXPECT_NE(errors[1].find("rank 10 passed symmetric buffer 2 at byte 0"), std::string::npos)
      << errors[1];

  // One rank's tensor is symmetric, the other's ordinary: named as different ops.
  auto mixed = host.run([&](int r) {
    auto buf = make(host, r, 3, 4096);
    ASSERT_TRUE(buf);
    std::vector<float> plain(100, 1.0f);
    if (r == 0)
      host.ranks[r]->allreduce_symmetric(*buf, 0, 100, kFloat32, ReduceOp::SUM, long_deadline());
    else
      host.ranks[r]->allreduce(plain.data(), 100, kFloat32, ReduceOp::SUM, long_deadline());
  });
  EXPECT_NE(mixed[0].find("rank 11 issued allreduce(SUM) of 400 bytes of float32 while rank 10 "
                          "issued allreduce(SUM) of 400 bytes of float32 in a symmetric buffer"),
            std::string::npos)
      << mixed[0];
}

// A segment the host cannot hold (far beyond /dev/shm): no rank gets one, the group goes on.
TEST(ShmGroup, SymmetricBufferNoHostCanHoldIsNullOnEveryRank) {
  for (int n : {2, 3}) {
    ShmHost host(n, 4096);
    std::vector<int> made(n, -1), after(n, -1);
    auto errors = host.run([&](int r) {
      made[r] = make(host, r, 4, size_t{1} << 50) != nullptr;
      after[r] = make(host, r, 5, 4096) != nullptr;  // the next one works
    });
    for (int r = 0; r < n; ++r) {
      EXPECT_EQ(errors[r], "") << r;
      EXPECT_EQ(made[r], 0) << "rank " << r;
      EXPECT_EQ(after[r], 1) << "rank " << r;
    }
  }
}

}  // namespace
