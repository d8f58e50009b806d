// The shared-memory all-reduce under ProcessGroupGloo (Note [Shared-memory all-reduce] in
// docs/ARCHITECTURE.md). In-process: the fold's arithmetic against closed forms, stale segments
// removed, one host's ShmGroup driven by threads (pipelining, reduce-scatter parts, a peer that is
// gone or late). Real processes under weft-run (tests/distributed/shm_worker.cpp): results equal
// Gloo's at 2, 3 and 4 ranks for every dtype and op, fallback when one rank turns it off,
// mismatched sizes, a peer killed by SIGKILL and a stalled one named by the others, and no segment
// left in /dev/shm.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <regex>
#include <set>
#include <thread>

#include "distributed/shm/fold.h"
#include "distributed/shm/shm_group.h"
#include "shm_host.h"
#include "subprocess.h"
#include "weft/half.h"

namespace {

using namespace weft;
using namespace weft::dist;
using weft::test::build_dir;
using weft::test::long_deadline;
using weft::test::run_command;
using weft::test::RunResult;
using weft::test::ShmHost;

// --- the fold, against a left fold written out here ---------------------------------------

float ref_combine(float a, float b, ReduceOp op) {
  switch (op) {
    case ReduceOp::PRODUCT:
      return a * b;
    case ReduceOp::MAX:
      return a > b ? a : b;
    case ReduceOp::MIN:
      return a < b ? a : b;
    default:
      return a + b;
  }
}

TEST(ShmFold, Float32InRankOrderEveryOp) {
  for (int n = 1; n <= 4; ++n)
    for (ReduceOp op :
         {ReduceOp::SUM, ReduceOp::AVG, ReduceOp::MAX, ReduceOp::MIN, ReduceOp::PRODUCT}) {
      const size_t count = 2500;  // more than one block, not a multiple of it
      std::vector<std::vector<float>> in(n, std::vector<float>(count));
      for (int r = 0; r < n; ++r)
        for (size_t i = 0; i < count; ++i)
          in[r][i] = 0.1f * (r + 1) + 1e-3f * (i % 97) - 0.05f * r * r;
      std::vector<const void*> srcs;
      for (auto& v : in) srcs.push_back(v.data());
      std::vector<float> out(count);
      shm::fold(out.data(), srcs.data(), n, count, kFloat32, op);
      if (op == ReduceOp::AVG) shm::average(out.data(), count, kFloat32, n);
      for (size_t i = 0; i < count; ++i) {
        float want = in[0][i];
        for (int r = 1; r < n; ++r) want = ref_combine(want, in[r][i], op);
        if (op == ReduceOp::AVG) want /= static_cast<float>(n);
        ASSERT_EQ(std::memcmp(&out[i], &want, 4), 0) << to_string(op) << " n=" << n << " i=" << i;
      }
    }
}

TEST(ShmFold, HalvesInFloatRoundedOnceInt64Wraps) {
  const size_t count = 1500;
  std::vector<uint16_t> a(count), b(count), c(count), out(count);
  for (size_t i = 0; i < count; ++i) {
    a[i] = float_to_bf16(1.0f + i * 1e-3f);
    b[i] = float_to_bf16(-0.5f + i * 7e-4f);
    c[i] = float_to_bf16(0.003f * (i % 13));
  }
  const void* srcs[] = {a.data(), b.data(), c.data()};
  shm::fold(out.data(), srcs, 3, count, DType::BFloat16, ReduceOp::SUM);
  for (size_t i = 0; i < count; ++i) {
    const float want = (bf16_to_float(a[i]) + bf16_to_float(b[i])) + bf16_to_float(c[i]);
    ASSERT_EQ(out[i], float_to_bf16(want)) << i;
  }
  // fp16 AVG of two: rounded sum, then divided and rounded again (the Gloo path's steps).
  for (size_t i = 0; i < count; ++i) {
    a[i] = float_to_fp16(0.37f * i);
    b[i] = float_to_fp16(-0.11f * i + 3);
  }
  const void* two[] = {a.data(), b.data()};
  shm::fold(out.data(), two, 2, count, DType::Float16, ReduceOp::AVG);
  shm::average(out.data(), count, DType::Float16, 2);
  for (size_t i = 0; i < count; ++i) {
    const uint16_t sum = float_to_fp16(fp16_to_float(a[i]) + fp16_to_float(b[i]));
    ASSERT_EQ(out[i], float_to_fp16(fp16_to_float(sum) / 2.0f)) << i;
  }
  // int64: exact beyond float precision; sums that overflow wrap; AVG truncates.
  std::vector<int64_t> x = {INT64_MAX, (int64_t{1} << 53) + 1, -7}, y = {1, 1, 0}, o(3);
  const void* ints[] = {x.data(), y.data()};
  shm::fold(o.data(), ints, 2, 3, kInt64, ReduceOp::SUM);
  EXPECT_EQ(o[0], INT64_MIN);
  EXPECT_EQ(o[1], (int64_t{1} << 53) + 2);
  shm::average(o.data(), 3, kInt64, 2);
  EXPECT_EQ(o[2], -3);  // -7 / 2 truncated, as Gloo's (and NCCL's) integer AVG
}

TEST(ShmFold, OutputMayBeASource) {
  std::vector<float> a(3000), b(3000);
  for (size_t i = 0; i < a.size(); ++i) a[i] = 0.5f * i, b[i] = 1.0f;
  const void* srcs[] = {a.data(), b.data()};
  shm::fold(b.data(), srcs, 2, b.size(), kFloat32, ReduceOp::SUM);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(b[i], 0.5f * i + 1.0f) << i;
}

// --- the segment ---------------------------------------------------------------------------

// Ages a segment by its name: modified an hour ago.
void age(const std::string& name) {
  const int fd = shm_open(name.c_str(), O_RDWR, 0600);
  ASSERT_GE(fd, 0) << name;
  const timespec old{time(nullptr) - 3600, 0};
  const timespec times[2] = {old, old};
  ASSERT_EQ(futimens(fd, times), 0);
  close(fd);
}

TEST(ShmSegment, CreatingOneRemovesStaleOnes) {
  // Left by a creator killed before it unlinked the name: old, and nobody holds a lock on it.
  const std::string stale = "/weft-0-stale" + std::to_string(getpid());
  const int fd = shm_open(stale.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  close(fd);
  age(stale);
  // Just as old, but its creator (this process) is alive and holds its lock.
  shm::Segment live = shm::Segment::create(4096);
  age(live.name());
  shm::Segment fresh = shm::Segment::create(4096);
  EXPECT_FALSE(std::filesystem::exists("/dev/shm" + stale));
  EXPECT_TRUE(std::filesystem::exists("/dev/shm" + live.name()));
  EXPECT_TRUE(std::filesystem::exists("/dev/shm" + fresh.name()));
  const std::string names[] = {live.name(), fresh.name()};
  live = shm::Segment();  // unlinks the names it created
  fresh = shm::Segment();
  for (const auto& name : names) EXPECT_FALSE(std::filesystem::exists("/dev/shm" + name));
}

// --- one host's group, ranks as threads (each maps the segment itself) ---------------------

TEST(ShmGroup, AllreduceAndBroadcastOverManyChunks) {
  for (int n : {2, 3, 4})
    for (size_t chunk : {size_t{256}, size_t{128 * 1024}}) {  // direct; reduce-scatter parts
      ShmHost host(n, chunk);
      EXPECT_FALSE(std::filesystem::exists("/dev/shm" + host.name));  // unlinked, still mapped
      const size_t count = 3 * 32768 + 20001;  // many steps; a last chunk of odd parts
      std::vector<std::vector<float>> data(n, std::vector<float>(count));
      for (int r = 0; r < n; ++r)
        for (size_t i = 0; i < count; ++i) data[r][i] = 0.25f * r + 1e-4f * (i % 1013) - 0.3f;
      const auto input = data;
      std::vector<std::vector<int64_t>> ids(n), small(n);
      for (int r = 0; r < n; ++r) {
        ids[r].assign(count, r == 0 ? 42 : -1);
        small[r].assign(7, r);
      }
      auto errors = host.run([&](int r) {
        const auto dl = long_deadline();
        host.ranks[r]->allreduce(data[r].data(), count, kFloat32, ReduceOp::SUM, dl);
        host.ranks[r]->broadcast(ids[r].data(), count, kInt64, dl);
        host.ranks[r]->allreduce(small[r].data(), 7, kInt64, ReduceOp::MAX, dl);
      });
      for (int r = 0; r < n; ++r) {
        ASSERT_EQ(errors[r], "") << r;
        for (int64_t v : small[r]) ASSERT_EQ(v, n - 1) << "MAX, rank " << r;
      }
      for (int r = 0; r < n; ++r)
        for (size_t i = 0; i < count; ++i) {
          float sum = input[0][i];
          for (int q = 1; q < n; ++q) sum += input[q][i];
          ASSERT_EQ(std::memcmp(&data[r][i], &sum, 4), 0)
              << "n=" << n << " chunk=" << chunk << " rank " << r << " element " << i;
          ASSERT_EQ(ids[r][i], 42) << "broadcast, rank " << r;
        }
    }
}

// reduce_scatter and allgather against closed forms (the rank-order sum; the concatenation), and
// broadcast from every root, at chunk sizes that split each part over many steps.
TEST(ShmGroup, ReduceScatterAllgatherAndBroadcastFromAnyRoot) {
  for (int n : {2, 3, 4})
    for (size_t chunk : {size_t{256}, size_t{128 * 1024}}) {
      ShmHost host(n, chunk);
      const size_t count = 32768 + 4001;  // per rank; parts span several steps at both chunks
      auto input = [&](int r, size_t i) { return 0.25f * r + 1e-4f * (i % 977) - 0.3f; };
      std::vector<std::vector<float>> in(n, std::vector<float>(n * count)), out(n),
          gathered(n, std::vector<float>(n * count));
      std::vector<std::vector<int64_t>> bcast(n, std::vector<int64_t>(count));
      for (int r = 0; r < n; ++r) {
        for (size_t i = 0; i < n * count; ++i) in[r][i] = input(r, i);
        out[r].assign(count, -1.0f);
      }
      auto errors = host.run([&](int r) {
        const auto dl = long_deadline();
        host.ranks[r]->reduce_scatter(in[r].data(), out[r].data(), count, kFloat32, ReduceOp::SUM,
                                      dl);
        // In place, as FSDP gathers: this rank's input is its own part of the output.
        float* mine = gathered[r].data() + r * count;
        for (size_t i = 0; i < count; ++i) mine[i] = out[r][i] * static_cast<float>(r + 1);
        host.ranks[r]->allgather(mine, gathered[r].data(), count, kFloat32, dl);
        for (int root = 0; root < n; ++root) {
          std::fill(bcast[r].begin(), bcast[r].end(), r == root ? 100 + root : -1);
          host.ranks[r]->broadcast(bcast[r].data(), count, kInt64, dl, root);
          for (int64_t v : bcast[r]) ASSERT_EQ(v, 100 + root) << "broadcast from " << root;
        }
      });
      for (int r = 0; r < n; ++r) {
        ASSERT_EQ(errors[r], "") << r;
        for (size_t i = 0; i < count; ++i) {
          float sum = input(0, r * count + i);
          for (int q = 1; q < n; ++q) sum += input(q, r * count + i);
          ASSERT_EQ(std::memcmp(&out[r][i], &sum, 4), 0)
              << "reduce_scatter n=" << n << " chunk=" << chunk << " rank " << r << " " << i;
        }
      }
      for (int r = 0; r < n; ++r)
        for (int q = 0; q < n; ++q)
          for (size_t i = 0; i < count; ++i)
            ASSERT_EQ(gathered[r][q * count + i], out[q][i] * static_cast<float>(q + 1))
                << "allgather n=" << n << " chunk=" << chunk << " rank " << r << " part " << q;
    }
}

TEST(ShmGroup, DifferentOpsNameThePeer) {
  ShmHost host(2, 4096);
  std::vector<std::vector<float>> in(2, std::vector<float>(200, 1.0f)), out(in);
  auto errors = host.run([&](int r) {
    if (r == 0)
      host.ranks[r]->reduce_scatter(in[r].data(), out[r].data(), 100, kFloat32, ReduceOp::AVG,
                                    long_deadline());
    else
      host.ranks[r]->allgather(in[r].data(), out[r].data(), 100, kFloat32, long_deadline());
  });
  EXPECT_NE(errors[0].find("rank 11 issued allgather of 400 bytes of float32 while rank 10 issued "
                           "reduce_scatter(AVG) of 800 bytes"),
            std::string::npos)
      << errors[0];
  EXPECT_NE(errors[1].find("rank 10 issued reduce_scatter(AVG) of 800 bytes"), std::string::npos)
      << errors[1];
}

TEST(ShmGroup, MismatchedSizesNameThePeer) {
  ShmHost host(2, 4096);
  std::vector<std::vector<float>> data(2, std::vector<float>(200, 1.0f));
  auto errors = host.run([&](int r) {
    host.ranks[r]->allreduce(data[r].data(), 100 + r, kFloat32, ReduceOp::SUM, long_deadline());
  });
  EXPECT_NE(errors[0].find("rank 11 issued allreduce(SUM) of 404 bytes of float32 while rank 10 "
                           "issued allreduce(SUM) of 400 bytes"),
            std::string::npos)
      << errors[0];
  EXPECT_NE(errors[1].find("rank 10 issued allreduce(SUM) of 400 bytes"), std::string::npos)
      << errors[1];
}

TEST(ShmGroup, PeerThatIsGoneIsNamed) {
  ShmHost host(3, 4096);
  host.ranks[2].reset();  // its mapping and lock go, as with a process that died
  std::vector<std::vector<float>> data(3, std::vector<float>(10000, 1.0f));
  auto errors = host.run(
      [&](int r) {
        host.ranks[r]->allreduce(data[r].data(), 10000, kFloat32, ReduceOp::SUM, long_deadline());
      },
      /*skip=*/2);
  for (int r = 0; r < 2; ++r)
    EXPECT_NE(errors[r].find("shm allreduce: peer rank 12 exited (killed or crashed) while rank " +
                             std::to_string(10 + r) + " waited for it"),
              std::string::npos)
        << errors[r];
}

TEST(ShmGroup, LatePeerTimesOutNamed) {
  ShmHost host(3, 4096);
  std::vector<std::vector<float>> data(3, std::vector<float>(10, 1.0f));
  auto errors = host.run(
      [&](int r) {
        host.ranks[r]->allreduce(data[r].data(), 10, kFloat32, ReduceOp::SUM,
                                 shm::Deadline::after(std::chrono::milliseconds(10000)));
      },
      /*skip=*/1);
  for (int r : {0, 2})
    EXPECT_NE(errors[r].find("shm allreduce: timed out: rank 11 did not arrive within 10000 ms"),
              std::string::npos)
        << errors[r];
}

// --- real processes -----------------------------------------------------------------------

RunResult launch(int nproc, const std::string& scenario, const std::string& env = "") {
  const std::string cmd = "env " + env + " " + build_dir() +
                          "/tools/weft-run --standalone --grace-period 120 --nproc-per-node " +
                          std::to_string(nproc) + " " + build_dir() +
                          "/tests/distributed/shm_worker " + scenario;
  return run_command(cmd, 300);
}

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

// The segment names the ranks printed; each must be gone from /dev/shm.
std::set<std::string> segments_gone(const RunResult& r) {
  std::set<std::string> names;
  std::regex re("SHM_SEGMENT (/weft-[0-9a-f-]+)");
  for (std::sregex_iterator it(r.output.begin(), r.output.end(), re), end; it != end; ++it)
    names.insert((*it)[1].str());
  for (const auto& name : names)
    EXPECT_FALSE(std::filesystem::exists("/dev/shm" + name)) << name << " left behind\n"
                                                             << r.output;
  return names;
}

// Every dtype and op against the Gloo path, with the default chunk (reduce-scatter parts at 3
// and 4 ranks) and with 4 KiB chunks (hundreds of pipeline steps per tensor).
void expect_equal_to_gloo(int n) {
  for (std::string chunk : {"", "4096"}) {
    auto r = launch(n, "equiv", chunk.empty() ? "" : "WEFT_SHM_CHUNK_BYTES=" + chunk);
    EXPECT_EQ(r.code, 0) << "world " << n << " chunk " << chunk << "\n" << r.output;
    EXPECT_EQ(count(r.output, "OK rank="), n) << r.output;
    EXPECT_EQ(segments_gone(r).size(), 1u) << "one host, one segment\n" << r.output;
  }
}

TEST(ShmAllreduce, EqualsGlooBitForBitAtTwoRanks) { expect_equal_to_gloo(2); }
TEST(ShmAllreduce, EqualsGlooAtThreeRanks) { expect_equal_to_gloo(3); }
TEST(ShmAllreduce, EqualsGlooAtFourRanks) { expect_equal_to_gloo(4); }

TEST(ShmAllreduce, OneRankOffMeansGlooForAll) {
  auto r = launch(3, "one_off");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(count(r.output, "SHM_SEGMENT none"), 3) << r.output;
  EXPECT_EQ(count(r.output, "OK rank="), 3) << r.output;
}

TEST(ShmAllreduce, MismatchedSizesFailNamingThePeer) {
  auto r = launch(2, "mismatch");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("[rank0]: DISTERROR: gloo allreduce(SUM, float32 (100,)) on rank 0 of 2 "
                          "failed: shm allreduce: rank 1 issued allreduce(SUM) of 404 bytes"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("[rank1]: DISTERROR: gloo allreduce(SUM, float32 (101,)) on rank 1 of 2 "
                          "failed: shm allreduce: rank 0 issued allreduce(SUM) of 400 bytes"),
            std::string::npos)
      << r.output;
}

TEST(ShmAllreduce, KilledPeerIsNamedAndNothingIsLeftInDevShm) {
  auto r = launch(3, "kill9");
  EXPECT_EQ(r.code, 128 + 9) << "weft-run reports the killed rank's signal\n" << r.output;
  for (int q = 0; q < 2; ++q)
    EXPECT_NE(r.output.find("[rank" + std::to_string(q) +
                            "]: DISTERROR: gloo allreduce(SUM, float32 (100000,)) on rank " +
                            std::to_string(q) + " of 3 failed: shm allreduce: peer rank 2 exited"),
              std::string::npos)
        << r.output;
  EXPECT_EQ(segments_gone(r).size(), 1u) << r.output;
}

TEST(ShmAllreduce, StalledPeerTimesOutNamed) {
  std::string dir = (std::filesystem::temp_directory_path() / "weft_shm_XXXXXX").string();
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  auto r = launch(3, "stall", "WEFT_TEST_DIR=" + dir);
  std::filesystem::remove_all(dir);
  EXPECT_EQ(r.code, 0) << r.output;
  for (int q = 0; q < 2; ++q)
    EXPECT_NE(r.output.find("[rank" + std::to_string(q) +
                            "]: DISTERROR: weft.dist: rank 2 did not reach collective #1"),
              std::string::npos)
        << r.output;
  // The desync report leads; the shm path's own error follows it.
  EXPECT_EQ(count(r.output, "shm allreduce: timed out: rank 2 did not arrive within 1500 ms"), 2)
      << r.output;
  EXPECT_EQ(count(r.output, "OK rank="), 3) << r.output;
}

TEST(ShmAllreduce, HierarchicalAcrossTwoHostsInNetworkNamespaces) {
  // 2 hosts x 2 ranks: within each host through its segment, between them over Gloo.
  auto r = run_command("env WEFT_MH_WORKER=shm_worker bash " WEFT_SOURCE_DIR
                       "/tests/distributed/multihost.sh " +
                           build_dir() + " equiv",
                       300);
  if (r.code == 77) GTEST_SKIP() << r.output;
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(count(r.output, "OK rank="), 4) << r.output;
  const std::set<std::string> names = segments_gone(r);
  EXPECT_EQ(names.size(), 2u) << "one segment per host\n" << r.output;
  // Ranks 0 and 1 share node 0's segment, ranks 2 and 3 node 1's.
  for (const auto& name : names) EXPECT_EQ(count(r.output, "SHM_SEGMENT " + name), 2) << r.output;
}

TEST(ShmAllreduce, BadSettingsAreNamed) {
  auto r = launch(2, "equiv", "WEFT_SHM=maybe");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("WEFT_SHM='maybe' is not 0 or 1"), std::string::npos) << r.output;
  r = launch(2, "equiv", "WEFT_SHM_CHUNK_BYTES=lots");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("WEFT_SHM_CHUNK_BYTES='lots' is not a byte count"), std::string::npos)
      << r.output;
}

}  // namespace
