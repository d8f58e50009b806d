// Collective timeouts and desync reports (Note [Collective sequence numbers]) with real
// processes under weft-run --standalone: a stalled rank is named, with the collective it did not
// reach, by the survivors and by weft-run; a killed rank is weft-run's cause; the timeout comes
// from weft-run --collective-timeout, WEFT_COLLECTIVE_TIMEOUT, InitOptions or weft-train
// --timeout. WEFT_DISTRIBUTED_DEBUG: DETAIL's fingerprints refuse mismatched collectives on every
// rank, INFO's DDP log, a bad level. Only messages are asserted, never durations.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "distributed/desync.h"
#include "distributed/op_record.h"
#include "subprocess.h"
#include "weft/distributed/error_file.h"
#include "weft/distributed/file_store.h"

using weft::test::build_dir;
using weft::test::run_command;
using weft::test::RunResult;
namespace fs = std::filesystem;

namespace {

// weft-run --standalone with `opts` starting `nproc` copies of `program` (under build/); `env`
// is prepended as VAR=value words.
RunResult launch(int nproc, const std::string& opts, const std::string& program,
                 const std::string& env = "") {
  return run_command((env.empty() ? "" : "env " + env + " ") + build_dir() +
                         "/tools/weft-run --standalone --nproc-per-node " + std::to_string(nproc) +
                         " " + opts + " " + build_dir() + "/" + program,
                     180);
}

RunResult worker(int nproc, const std::string& opts, const std::string& args,
                 const std::string& env = "") {
  return launch(nproc, opts, "tests/distributed/desync_worker " + args, env);
}

std::vector<std::string> lines_with(const std::string& out, const std::string& needle) {
  std::vector<std::string> v;
  std::istringstream in(out);
  for (std::string l; std::getline(in, l);)
    if (l.find(needle) != std::string::npos) v.push_back(l);
  return v;
}

bool has(const std::string& out, const std::string& s) { return out.find(s) != std::string::npos; }

using weft::dist::Duration;
using weft::dist::detail::CollectiveLog;
using weft::dist::detail::OpKind;
using weft::dist::detail::OpRecord;

// Rank `rank` of `size` in group 7 whose log issued 5 collectives (#5: an allreduce of 1000
// floats) and saw 4 of them complete, with a 300 ms timeout (so a 300 ms grace).
std::shared_ptr<CollectiveLog> log_at_5(int rank, int size, std::shared_ptr<weft::dist::Store> s) {
  auto log = std::make_shared<CollectiveLog>(7, rank, size, std::move(s), Duration(300));
  for (int64_t seq = 1; seq <= 5; ++seq) {
    const auto t = weft::make_empty({seq == 5 ? 1000 : 2}, weft::kFloat32);
    log->record(seq, OpRecord::of(seq == 5 ? OpKind::ALLREDUCE : OpKind::BROADCAST, {t},
                                  seq == 5 ? 0 : -1, seq == 5 ? -1 : 0));
    if (seq < 5) log->completed(seq);
  }
  return log;
}

std::exception_ptr timed_out() {
  return std::make_exception_ptr(weft::DistError("gloo allreduce failed: Timed out waiting"));
}

std::string failure(CollectiveLog& log, const std::exception_ptr& e) {
  try {
    log.fail(e);
  } catch (const std::exception& ex) {
    return ex.what();
  }
  return "fail() returned";
}

// A FileStore in a fresh temporary file, removed with the object.
struct TempStore {
  TempStore() {
    std::string t = (fs::temp_directory_path() / "weft_desync_XXXXXX").string();
    dir = mkdtemp(t.data());
    store = std::make_shared<weft::dist::FileStore>(dir + "/store", -1, Duration(60000));
  }
  ~TempStore() { fs::remove_all(dir); }
  std::string dir;
  std::shared_ptr<weft::dist::FileStore> store;
};

// A store whose host is gone: every call fails.
class DeadStore : public weft::dist::Store {
 public:
  [[noreturn]] static void gone() { throw weft::DistError("Connection refused"); }
  void set(const std::string&, const std::vector<uint8_t>&) override { gone(); }
  std::vector<uint8_t> get(const std::string&) override { gone(); }
  int64_t add(const std::string&, int64_t) override { gone(); }
  std::vector<uint8_t> compare_set(const std::string&, const std::vector<uint8_t>&,
                                   const std::vector<uint8_t>&) override {
    gone();
  }
  bool check(const std::vector<std::string>&) override { gone(); }
  bool delete_key(const std::string&) override { gone(); }
  void wait(const std::vector<std::string>&, Duration) override { gone(); }
  int64_t num_keys() override { gone(); }
};

// The stalled rank's survivors time out in collective #n and name it (every survivor that got to
// print, at least one); weft-run reports it as the cause, naming a survivor as the witness.
void expect_stall_named(const RunResult& r, int stalled, int n) {
  const std::string stuck = "rank " + std::to_string(stalled) + " did not reach collective #" +
                            std::to_string(n) +
                            " (allreduce(SUM, float32 (250, 4)), 3.9 KiB) of group 0: stalled or "
                            "dead";
  EXPECT_EQ(r.code, 1) << r.output;
  const auto errors = lines_with(r.output, "DISTERROR: ");
  EXPECT_GE(errors.size(), 1u) << r.output;
  for (const auto& e : errors) EXPECT_TRUE(has(e, "DISTERROR: weft.dist: " + stuck)) << r.output;
  std::regex report("weft-run: failed: rank " + std::to_string(stalled) +
                    " stalled or died \\(named by rank \\d \\(local \\d, pid \\d+\\), which exited "
                    "with code 1: weft\\.dist: " +
                    std::regex_replace(stuck, std::regex("[()#.]"), "\\$&"));
  EXPECT_TRUE(std::regex_search(r.output, report)) << r.output;
}

}  // namespace

TEST(Desync, ReportNamesSilentAndBehindRanks) {
  // Rank 1 reports 3 collectives entered, rank 2 nothing; rank 0 is stuck in #5.
  TempStore ts;
  ts.store->set("desync/1", "3 3\n\nbroadcast(root 0, float32 (2,)), 8 B");
  auto log = log_at_5(0, 3, ts.store);
  const std::string m = failure(*log, timed_out());
  EXPECT_TRUE(has(m,
                  "weft.dist: rank 2 did not reach collective #5 (allreduce(SUM, float32 "
                  "(1000,)), 3.9 KiB) of group 7: stalled or dead (no desync report within "
                  "300 ms, while rank 0 reached it); rank 1 did not reach collective #5 of "
                  "group 7: it is behind, at collective #3 (broadcast(root 0, float32 (2,)), "
                  "8 B). Rank 0's error: gloo allreduce failed: Timed out waiting"))
      << m;
  // This rank's own report is there for the others; a later failure repeats the diagnosis.
  EXPECT_EQ(ts.store->get_string("desync/0"),
            "5 4\nallreduce(SUM, float32 (1000,)), 3.9 KiB\nallreduce(SUM, float32 (1000,)), "
            "3.9 KiB");
  EXPECT_EQ(failure(*log, timed_out()), m);
}

TEST(Desync, ReportWhenEveryRankReachedIt) {
  TempStore ts;
  ts.store->set("desync/0", "5 4\nallreduce(SUM, float32 (1000,)), 3.9 KiB\nsame");
  auto log = log_at_5(1, 2, ts.store);
  const std::string m = failure(*log, timed_out());
  EXPECT_TRUE(has(m,
                  "weft.dist: all 2 ranks reached collective #5 (allreduce(SUM, float32 "
                  "(1000,)), 3.9 KiB) of group 7, and it timed out on rank 1: a hang inside it, "
                  "or the ranks issued different collectives or shapes "
                  "(WEFT_DISTRIBUTED_DEBUG=DETAIL checks that they agree)"))
      << m;
}

TEST(Desync, ReportWithoutAStoreOrWithItsHostGone) {
  auto log = log_at_5(1, 2, nullptr);  // MPI
  std::string m = failure(*log, timed_out());
  EXPECT_TRUE(has(m,
                  "weft.dist: collective #5 (allreduce(SUM, float32 (1000,)), 3.9 KiB) of "
                  "group 7 timed out on rank 1 of 2 (this backend has no store"))
      << m;
  log = log_at_5(1, 2, std::make_shared<DeadStore>());
  m = failure(*log, timed_out());
  EXPECT_TRUE(has(m,
                  "timed out on rank 1 of 2, and the ranks could not compare their progress: "
                  "the store is unreachable (its host, rank 0 of the job, may have died): "
                  "Connection refused"))
      << m;
}

TEST(Desync, OnlyTimeoutsAreReported) {
  // A lost connection names its peer already: the error passes through as it is, at once.
  TempStore ts;
  auto log = log_at_5(0, 2, ts.store);
  const auto lost = std::make_exception_ptr(weft::DistError("Connection closed by peer (rank 1)"));
  EXPECT_EQ(failure(*log, lost), "Connection closed by peer (rank 1)");
  EXPECT_FALSE(ts.store->check({"desync/0"}));
}

TEST(Desync, StalledRankIsNamedBySurvivorAndLauncher) {
  // Rank 1 stops before collective #5; the timeout (5 s) comes from weft-run.
  expect_stall_named(worker(2, "--collective-timeout 5", "stall 1 5"), 1, 5);
}

TEST(Desync, StalledStoreHostIsNamed) {
  // Rank 0 hosts the store; its stalled main thread leaves the store serving the reports.
  expect_stall_named(worker(2, "", "stall 0 3", "WEFT_COLLECTIVE_TIMEOUT=5"), 0, 3);
}

TEST(Desync, StalledRankAmongThree) {
  expect_stall_named(worker(3, "--collective-timeout 5", "stall 1 4"), 1, 4);
}

TEST(Desync, KilledRankIsTheLaunchersCause) {
  // Rank 1 dies (SIGKILL) before collective #3: the survivors fail at once on the lost
  // connection, and weft-run blames rank 1 even when it finds them dead in the same pass.
  auto r = worker(3, "--collective-timeout 30", "die 1 3");
  EXPECT_EQ(r.code, 128 + 9) << r.output;
  EXPECT_TRUE(std::regex_search(
      r.output, std::regex("weft-run: failed: rank 1 \\(local 1, pid \\d+\\) was killed by "
                           "signal 9 \\(SIGKILL\\)")))
      << r.output;
  for (const auto& e : lines_with(r.output, "DISTERROR: "))
    EXPECT_TRUE(has(e, "gloo allreduce(SUM, float32 (250, 4))")) << r.output;
}

TEST(Desync, TimeoutPrecedence) {
  // weft-run's option, then the variable, lose to an explicit InitOptions::timeout.
  auto r = worker(2, "--collective-timeout 25", "timeout");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(lines_with(r.output, "timeout_ms=25000").size(), 2u) << r.output;
  r = worker(1, "", "timeout 7000", "WEFT_COLLECTIVE_TIMEOUT=2.5");
  EXPECT_TRUE(has(r.output, "rank 0: timeout_ms=7000")) << r.output;
  r = worker(1, "", "timeout");
  EXPECT_TRUE(has(r.output, "rank 0: timeout_ms=1800000")) << r.output;
  r = worker(1, "", "timeout", "WEFT_COLLECTIVE_TIMEOUT=soon");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(has(r.output, "WEFT_COLLECTIVE_TIMEOUT='soon' is not a positive number of seconds"))
      << r.output;
  r = worker(1, "--collective-timeout 0", "timeout");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(has(r.output, "--collective-timeout must be positive")) << r.output;
}

TEST(Desync, WeftTrainTimeoutOption) {
  auto r = run_command(build_dir() + "/tools/weft-train --timeout 0", 30);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(has(r.output, "--timeout 0: must be a positive number of seconds")) << r.output;
  const std::string data = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(data)) GTEST_SKIP() << data << " is missing (dataset-fashion-mnist)";
  const std::string dir = (fs::temp_directory_path() / "weft_desync_train").string();
  const std::string train =
      "tools/weft-train --limit-train 128 --limit-test 64 --batch-size 32 --epochs 1 "
      "--no-progress --checkpoint-dir " +
      dir;
  r = launch(2, "--collective-timeout 170", train + " --timeout 420");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "weft-train: collective timeout 420 s")) << r.output;
  r = launch(2, "--collective-timeout 170", train);
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "weft-train: collective timeout 170 s")) << r.output;
  fs::remove_all(dir);
}

TEST(DistributedDebug, DetailRefusesMismatchedShapesOnEveryRank) {
  auto r = worker(3, "", "mismatch shape", "WEFT_DISTRIBUTED_DEBUG=DETAIL");
  EXPECT_EQ(r.code, 0) << r.output;
  const std::string want =
      "DISTERROR: weft.dist: collective #2 of group 0 mismatch (WEFT_DISTRIBUTED_DEBUG=DETAIL): "
      "rank 0 called allreduce(SUM, float32 (4, 3)) but rank 1 called allreduce(SUM, float32 (5, "
      "3))";
  EXPECT_EQ(lines_with(r.output, want).size(), 3u) << r.output;
  EXPECT_EQ(lines_with(r.output, "OK group usable after the mismatch").size(), 3u) << r.output;
}

TEST(DistributedDebug, DetailRefusesDifferentOpsOnEveryRank) {
  auto r = worker(2, "", "mismatch op", "WEFT_DISTRIBUTED_DEBUG=detail");
  EXPECT_EQ(r.code, 0) << r.output;
  const std::string want =
      "mismatch (WEFT_DISTRIBUTED_DEBUG=DETAIL): rank 0 called allreduce(SUM, float32 (4, 3)) "
      "but rank 1 called broadcast(root 0, float32 (4, 3))";
  EXPECT_EQ(lines_with(r.output, want).size(), 2u) << r.output;
  EXPECT_EQ(lines_with(r.output, "OK group usable after the mismatch").size(), 2u) << r.output;
}

TEST(DistributedDebug, DetailPassesMatchingCollectives) {
  auto r = worker(3, "", "detail_ok", "WEFT_DISTRIBUTED_DEBUG=DETAIL");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(lines_with(r.output, "OK detail collectives").size(), 3u) << r.output;
  // DDP's bucketed, asynchronous all-reduces under the check still equal one process's training.
  r = launch(2, "", "tests/distributed/ddp_worker equiv sgd", "WEFT_DISTRIBUTED_DEBUG=DETAIL");
  EXPECT_EQ(r.code, 0) << r.output;
}

TEST(DistributedDebug, InfoLogsBucketsAndUnusedParameters) {
  auto r = launch(2, "", "tests/distributed/ddp_worker unused_flag", "WEFT_DISTRIBUTED_DEBUG=INFO");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output,
                  "[rank0]: weft.dist INFO: DistributedDataParallel: 1 bucket(s) in reverse "
                  "registration order (bucket_cap 25.0 MiB, first bucket 1.0 MiB): bucket 0 (80 "
                  "B) b.bias, b.weight, a.bias, a.weight"))
      << r.output;
  EXPECT_TRUE(has(r.output, "1 bucket(s) rebuilt in the order gradients arrived")) << r.output;
  for (const char* rank : {"0", "1"})
    EXPECT_TRUE(has(r.output, std::string("weft.dist INFO: DistributedDataParallel: rank ") + rank +
                                  ", iteration 0: 2 parameter(s) unused in this rank's graph: "
                                  "b.weight, b.bias"))
        << r.output;
  // Off by default: no log at all.
  r = launch(2, "", "tests/distributed/ddp_worker unused_flag");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_FALSE(has(r.output, "weft.dist INFO")) << r.output;
}

TEST(DistributedDebug, BadLevelIsAnError) {
  auto r = worker(2, "", "timeout", "WEFT_DISTRIBUTED_DEBUG=bogus");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(
      has(r.output, "WEFT_DISTRIBUTED_DEBUG='bogus' is not a debug level (OFF, INFO or DETAIL)"))
      << r.output;
}

TEST(DistributedDebug, FingerprintsDescribeTheOp) {
  using weft::dist::detail::OpKind;
  using weft::dist::detail::OpRecord;
  weft::Tensor a = weft::make_empty({4, 3}, weft::kFloat32);
  weft::Tensor b = weft::make_empty({2}, weft::kInt64);
  const auto ar = OpRecord::of(OpKind::ALLREDUCE, {a}, static_cast<int>(weft::dist::ReduceOp::MAX));
  EXPECT_EQ(ar.describe(), "allreduce(MAX, float32 (4, 3))");
  EXPECT_EQ(ar.describe_with_size(), "allreduce(MAX, float32 (4, 3)), 48 B");
  const auto bc = OpRecord::of(OpKind::BROADCAST, {b, a}, -1, 1);
  EXPECT_EQ(bc.describe(), "broadcast(root 1, int64 (2,), 2 tensors)");
  EXPECT_EQ(bc.numel, 14);
  EXPECT_EQ(OpRecord::of(OpKind::BARRIER, {}).describe(), "barrier");
  weft::Tensor big = weft::make_empty({1, 2, 1, 2, 1, 2, 3}, weft::kFloat32);
  EXPECT_EQ(OpRecord::of(OpKind::ALLGATHER, {big}).describe(),
            "allgather(float32 (1, 2, 1, 2, 1, 2, ...))");
  for (const OpRecord& r : {ar, bc, OpRecord::of(OpKind::BARRIER, {})}) {
    const auto fp = r.fingerprint(7);
    EXPECT_EQ(fp[1], 7);
    const OpRecord back = OpRecord::from_fingerprint(fp.data());
    EXPECT_EQ(back.describe_with_size(), r.describe_with_size());
    EXPECT_TRUE(back == r);
  }
  EXPECT_FALSE(ar == OpRecord::of(OpKind::ALLREDUCE, {a}));  // SUM, not MAX
  EXPECT_EQ(weft::dist::detail::format_bytes(84 * 1024 * 1024), "84.0 MiB");
}

TEST(DistributedDebug, RecordErrorWritesTheLaunchersFile) {
  const fs::path file = fs::temp_directory_path() / "weft_desync_error_file";
  fs::remove(file);
  unsetenv("WEFT_ERROR_FILE");
  EXPECT_FALSE(weft::dist::record_error("ignored"));
  setenv("WEFT_ERROR_FILE", file.c_str(), 1);
  EXPECT_TRUE(weft::dist::record_error(std::runtime_error("first")));
  EXPECT_TRUE(weft::dist::record_error("rank 1 did not reach collective #3"));
  unsetenv("WEFT_ERROR_FILE");
  std::ifstream in(file);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "rank 1 did not reach collective #3");
  fs::remove(file);
}
