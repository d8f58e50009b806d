// DistributedDataParallel and SyncBatchNorm with real processes on loopback, launched
// through weft-run and through mpirun: equivalence with single-process training on the
// concatenated batch, no_sync, unused parameters, uneven inputs, mismatched models, and
// dead or stalled ranks failing the others within the timeout instead of hanging.
#include <gtest/gtest.h>


#include "subprocess.h"

using weft::test::build_dir;
using weft::test::run_command;
using weft::test::RunResult;

namespace {

RunResult launch(int nproc, const std::string& worker, const std::string& args, int seconds = 120,
                 const std::string& env = "") {
  std::string cmd = (env.empty() ? "" : "env " + env + " ") + build_dir() +
                    "/tools/weft-run --nproc-per-node " + std::to_string(nproc) + " --standalone " +
                    build_dir() + "/tests/distributed/" + worker + " " + args;
  return run_command(cmd, seconds);
}

RunResult mpirun(int n, const std::string& worker, const std::string& args) {
  std::string cmd = "mpirun --allow-run-as-root --oversubscribe -n " + std::to_string(n) +
                    " --mca btl self,tcp --mca btl_tcp_if_include lo " + build_dir() +
                    "/tests/distributed/" + worker + " " + args;
  return run_command(cmd, 180);
}

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

}  // namespace

TEST(DDP, EquivalentToSingleProcessSGDAndAdam) {
  // World 1 too: there the Reducer leaves gradients where backward put them.
  for (int n : {1, 2, 3, 4})
    for (std::string opt : {"sgd", "adam"}) {
      auto r = launch(n, "ddp_worker", "equiv " + opt);
      EXPECT_EQ(r.code, 0) << "world " << n << " " << opt << "\n" << r.output;
    }
}

TEST(DDP, GradScalerSkipsTheSameStepsOnEveryRank) {
  auto r = launch(2, "ddp_worker", "scaler");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(count(r.output, "scaler steps as expected 1, scale 2048"), 2) << r.output;
}

TEST(DDP, UnderAutocastEquivalentToSingleProcess) {
  auto r = launch(2, "ddp_worker", "autocast");
  EXPECT_EQ(r.code, 0) << r.output;
}

TEST(DDP, ManyBucketsAndBucketViews) {
  auto r = launch(3, "ddp_worker", "equiv_buckets sgd");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(count(r.output, "buckets 1,"), 0) << "expected several buckets:\n" << r.output;
  r = launch(2, "ddp_worker", "equiv_view");
  EXPECT_EQ(r.code, 0) << r.output;
}

TEST(DDP, CommunicationHooks) {
  for (std::string mode : {"fp16", "bf16", "custom_hook"}) {
    auto r = launch(2, "ddp_worker", mode);
    EXPECT_EQ(r.code, 0) << mode << "\n" << r.output;
  }
}

TEST(DDP, NoSyncAccumulationEqualsOneBigBatch) {
  auto r = launch(2, "ddp_worker", "nosync");
  EXPECT_EQ(r.code, 0) << r.output;
}

TEST(DDP, UnusedParameters) {
  auto without = launch(2, "ddp_worker", "unused", 60, "WEFT_TEST_TIMEOUT_MS=5000");
  EXPECT_NE(without.output.find("find_unused_parameters"), std::string::npos) << without.output;
  auto with = launch(2, "ddp_worker", "unused_flag");
  EXPECT_EQ(with.code, 0) << with.output;
  auto stat = launch(2, "ddp_worker", "static_graph");
  EXPECT_EQ(stat.code, 0) << stat.output;
  auto alone = launch(1, "ddp_worker", "unused_flag");
  EXPECT_EQ(alone.code, 0) << alone.output;
}

TEST(DDP, UnevenInputsWithJoin) {
  auto r = launch(3, "ddp_worker", "uneven");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(count(r.output, "identical across ranks: 1"), 3) << r.output;
}

TEST(DDP, DifferentModelsFailAtConstruction) {
  auto r = launch(2, "ddp_worker", "mismatch", 60, "WEFT_TEST_TIMEOUT_MS=10000");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_GE(count(r.output, "models differ across ranks"), 1) << r.output;
}

TEST(DDP, KilledRankFailsTheOthers) {
  // The collectives' timeout is far beyond the test's limit: the job ends only because the
  // others see the killed rank go (124 would be the test's own limit).
  auto r = launch(3, "ddp_worker", "kill", 300, "WEFT_TEST_TIMEOUT_MS=3600000");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_NE(r.code, 124) << r.output;
  EXPECT_NE(r.output.find("rank 1"), std::string::npos) << r.output;  // weft-run names it
}

TEST(DDP, StalledRankMakesOthersTimeOut) {
  auto r = launch(2, "ddp_worker", "stall", 300, "WEFT_TEST_TIMEOUT_MS=3000");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_NE(r.code, 124) << r.output;
  EXPECT_NE(r.output.find("rank 0: error"), std::string::npos) << r.output;
}

TEST(DDP, UnderMpirun) {
  if (!weft::test::have_mpirun()) GTEST_SKIP() << "mpirun (openmpi-bin) is not installed";
  auto r = mpirun(2, "ddp_worker", "equiv sgd");
  EXPECT_EQ(r.code, 0) << r.output;
}

TEST(SyncBatchNorm, MatchesBatchNormOnConcatenatedBatch) {
  struct Case {
    int n;
    std::string sizes;
    int spatial;
  };
  for (const Case& c : {Case{2, "2,2", 2}, Case{3, "3,1,2", 2}, Case{4, "2,2,2,2", 1},
                        Case{3, "4,0,1", 2}, Case{2, "1,3", 0}, Case{2, "2,3", 3}}) {
    auto r = launch(c.n, "sbn_worker", "equiv " + c.sizes + " " + std::to_string(c.spatial));
    EXPECT_EQ(r.code, 0) << c.sizes << " spatial " << c.spatial << "\n" << r.output;
  }
}

TEST(SyncBatchNorm, SubgroupsOfPairs) {
  auto r = launch(4, "sbn_worker", "subgroup");
  EXPECT_EQ(r.code, 0) << r.output;
}

TEST(SyncBatchNorm, ConvertedModelUnderDDPEqualsSingleProcess) {
  for (int n : {2, 3}) {
    auto r = launch(n, "sbn_worker", "ddp");
    EXPECT_EQ(r.code, 0) << r.output;
  }
}

TEST(SyncBatchNorm, UnderMpirun) {
  if (!weft::test::have_mpirun()) GTEST_SKIP() << "mpirun (openmpi-bin) is not installed";
  auto r = mpirun(3, "sbn_worker", "equiv 3,1,2 2");
  EXPECT_EQ(r.code, 0) << r.output;
}

TEST(DDP, TwoHostsInNetworkNamespaces) {
  auto r = run_command(
      "bash " WEFT_SOURCE_DIR "/tests/distributed/multihost.sh " + build_dir() + " equiv sgd", 150);
  if (r.code == 77) GTEST_SKIP() << r.output;
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("[rank3]: rank 3:"), std::string::npos) << r.output;
}
