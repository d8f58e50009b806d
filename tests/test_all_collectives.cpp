// torch.distributed's whole collective API with real processes (tests/distributed/coll_worker.cpp
// holds the checks, against closed forms over the ranks' values): every op on Gloo under weft-run
// at 2, 3 and 4 ranks, on MPI under mpirun; bad arguments, a dead peer, ranks missing a
// monitored_barrier and mismatched sizes under DETAIL each fail with a DistError naming the op and
// the rank. The object collectives' encoding is checked in process.
#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <string>

#include "subprocess.h"
#include "weft/distributed/object_collectives.h"

using weft::test::build_dir;
using weft::test::run_command;

namespace {

std::string worker() { return build_dir() + "/tests/distributed/coll_worker"; }

weft::test::RunResult launch(int n, const std::string& args, const std::string& env = "") {
  return run_command((env.empty() ? "" : "env " + env + " ") + build_dir() +
                         "/tools/weft-run --standalone --nproc-per-node " + std::to_string(n) +
                         " " + worker() + " " + args,
                     300);
}

int count(const std::string& s, const std::string& what) {
  int k = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++k;
  return k;
}

}  // namespace

TEST(AllCollectives, GlooEveryOpAtWorld2To4) {
  for (int n : {2, 3, 4}) {
    auto r = launch(n, "all gloo");
    EXPECT_EQ(r.code, 0) << "world " << n << "\n" << r.output;
    EXPECT_EQ(count(r.output, "backend=gloo"), n) << r.output;
  }
}

TEST(AllCollectives, GlooWithoutSharedMemory) {
  // reduce_scatter's list form takes Gloo's own reduce-scatter when there is no shm path.
  auto r = launch(3, "all gloo", "WEFT_SHM=0");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(count(r.output, "backend=gloo"), 3) << r.output;
}

TEST(AllCollectives, MpiEveryOpAtWorld2To4) {
  if (!weft::test::have_mpirun()) GTEST_SKIP() << "mpirun not found; MPI backend untested";
  for (int n : {2, 3, 4}) {
    auto r = run_command("mpirun --allow-run-as-root --oversubscribe -n " + std::to_string(n) +
                             " --mca btl self,tcp " + worker() + " all mpi",
                         300);
    EXPECT_EQ(r.code, 0) << "world " << n << "\n" << r.output;
    EXPECT_EQ(count(r.output, "backend=mpi"), n) << r.output;
  }
}

TEST(AllCollectives, BadArgumentsAreNamed) {
  auto r = launch(3, "errors gloo");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(count(r.output, "OK rank="), 3) << r.output;
}

TEST(AllCollectives, DeadPeerNamesTheOpAndRank) {
  // Rank 2 exits; each survivor's op fails naming the op and the rank whose connection broke
  // (a survivor may see the other survivor leave first), and someone names rank 2.
  const std::map<std::string, std::string> ops = {
      {"reduce_scatter_tensor", "reduce_scatter_tensor"},
      {"all_to_all_single", "alltoall_base"},
      {"gather", "gather(root 0)"},
      {"recv", "recv(from rank 2, tag 0)"}};
  for (const auto& [op, name] : ops) {
    auto r = launch(3, "dead gloo " + op, "WEFT_TEST_TIMEOUT_MS=5000");
    EXPECT_EQ(r.code, 0) << op << "\n" << r.output;
    EXPECT_EQ(count(r.output, "OK rank="), 2) << op << "\n" << r.output;
    bool names_rank2 = false;
    for (int rank : {0, 1}) {
      const std::string prefix = "[rank" + std::to_string(rank) + "]: DISTERROR: ";
      const size_t at = r.output.find(prefix);
      ASSERT_NE(at, std::string::npos) << r.output;
      const std::string m = r.output.substr(at, r.output.find('\n', at) - at);
      EXPECT_TRUE(std::regex_search(m, std::regex("ranks? [0-9]"))) << "no rank named: " << m;
      names_rank2 |= std::regex_search(m, std::regex("rank 2\\b|ranks [0-9, ]*2"));
      // Rank 1's gather finishes (it only sends); its next op, a reduce to rank 2, fails.
      const std::string want = op == "gather" && rank == 1 ? "reduce(SUM, root 2)" : name;
      EXPECT_NE(m.find(want), std::string::npos) << "the op is not named: " << m;
    }
    EXPECT_TRUE(names_rank2) << op << "\n" << r.output;
  }
}

TEST(AllCollectives, MonitoredBarrierNamesMissingRanks) {
  auto r = launch(3, "monitored gloo");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("[rank0]: DISTERROR: monitored_barrier: rank 2 failed to pass "
                          "monitored_barrier (did not arrive) within 15000 ms"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("[rank1]: DISTERROR: monitored_barrier: rank 0 did not release rank 1"),
            std::string::npos)
      << r.output;
  r = launch(4, "monitored_all gloo");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("[rank0]: DISTERROR: monitored_barrier: ranks 2, 3 failed to pass "
                          "monitored_barrier"),
            std::string::npos)
      << r.output;
}

TEST(AllCollectives, MismatchedSizesUnderDetailNameTheRank) {
  auto r = launch(3, "mismatch gloo", "WEFT_DISTRIBUTED_DEBUG=DETAIL");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("[rank0]: DISTERROR: weft.dist: collective #1 of group 0 mismatch "
                          "(WEFT_DISTRIBUTED_DEBUG=DETAIL): rank 0 called "
                          "allgather_into_tensor(float32 (3,)) but rank 2 called "
                          "allgather_into_tensor(float32 (4,))"),
            std::string::npos)
      << r.output;
}

TEST(ObjectEncoding, RoundTripsPlainDataAndRefusesBadBytes) {
  using namespace weft::dist;
  using Obj = std::map<std::string, std::vector<std::pair<int, double>>>;
  const Obj o = {{"a", {{1, 0.5}, {-7, 1e300}}}, {"", {}}, {std::string(3, '\0'), {{0, -0.0}}}};
  EXPECT_EQ(decode_object<Obj>(encode_object(o)), o);
  EXPECT_EQ(decode_object<std::vector<bool>>(encode_object(std::vector<bool>{true, false})),
            (std::vector<bool>{true, false}));
  EXPECT_EQ(decode_object<uint8_t>(encode_object(uint64_t{255})), 255);

  auto error_of = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const weft::DistError& e) {
      return e.what();
    }
    return "no DistError";
  };
  std::string bytes = encode_object(o);
  bytes.pop_back();
  EXPECT_NE(error_of([&] { decode_object<Obj>(bytes); }).find("the encoding ends early"),
            std::string::npos);
  // A vector claiming more elements than there are bytes left is refused before allocating.
  std::string huge(1, static_cast<char>(obj::Tag::VECTOR));
  const uint64_t n = uint64_t{1} << 60;
  huge.append(reinterpret_cast<const char*>(&n), sizeof n);
  EXPECT_NE(error_of([&] { decode_object<std::vector<int>>(huge); }).find("exceeds"),
            std::string::npos);
  EXPECT_NE(
      error_of([&] { decode_object<uint8_t>(encode_object(uint64_t{256})); }).find("does not fit"),
      std::string::npos);
  EXPECT_NE(error_of([&] {
              decode_object<int>(encode_object(1.5));
            }).find("expected a signed integer but found a floating-point number"),
            std::string::npos);
  EXPECT_NE(error_of([&] { decode_object<int>(encode_object(1) + "x"); }).find("bytes are left"),
            std::string::npos);
}
