// dist::spawn with real processes: tests/distributed/spawn_worker starts its own ranks. They join
// through spawn's held port and all-reduce (checked against the closed form n(n+1)/2); the first
// failing rank is named with its message or exit status, which becomes the program's; ranks that
// could only end by a signal are stopped; a process that already runs threads is refused.
#include <gtest/gtest.h>

#include <set>

#include "subprocess.h"

using weft::test::build_dir;
using weft::test::run_command;
using weft::test::RunResult;

namespace {

RunResult spawn_worker(const std::string& scenario, int nprocs) {
  // Generous: a hang, not slowness, is what this limit catches.
  return run_command(
      build_dir() + "/tests/distributed/spawn_worker " + scenario + " " + std::to_string(nprocs),
      300);
}

}  // namespace

TEST(Spawn, RanksJoinAndAllReduce) {
  for (int n : {1, 2, 3}) {
    const RunResult r = spawn_worker("sum", n);
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("SPAWN OK"), std::string::npos) << r.output;
    std::set<std::string> pids;
    for (int rank = 0; rank < n; ++rank) {
      const std::string line = "RANK " + std::to_string(rank) + " of " + std::to_string(n) +
                               " env RANK=" + std::to_string(rank) +
                               " LOCAL_RANK=" + std::to_string(rank) +
                               " WORLD_SIZE=" + std::to_string(n);
      const size_t at = r.output.find(line);
      ASSERT_NE(at, std::string::npos) << line << "\n" << r.output;
      const size_t eol = r.output.find('\n', at);
      const std::string rest = r.output.substr(at + line.size(), eol - at - line.size());
      const std::string want = std::to_string(n * (n + 1) / 2);
      EXPECT_NE(rest.find(" sum=" + want + " want=" + want), std::string::npos) << rest;
      pids.insert(rest.substr(rest.find("pid=")));
    }
    EXPECT_EQ(pids.size(), static_cast<size_t>(n)) << "each rank is its own process\n" << r.output;
  }
}

TEST(Spawn, FirstFailureNamedOthersStopped) {
  // Ranks 0 and 2 wait in pause(): only spawn's SIGTERM ends them, so spawn returning at all
  // shows they were stopped.
  struct Case {
    std::string how, want;
    int code;
  };
  for (const Case& c :
       {Case{"raise", "spawn: rank 1 of 3 raised: boom from rank 1", 1},
        Case{"exit", "spawn: rank 1 of 3 exited with code 3", 3},
        Case{"abort", "spawn: rank 1 of 3 was killed by signal 6 (SIGABRT)", 134}}) {
    const RunResult r = spawn_worker(c.how, 3);
    EXPECT_EQ(r.code, c.code) << c.how << "\n" << r.output;
    EXPECT_NE(r.output.find("SPAWNERROR rank=1 code=" + std::to_string(c.code) + ": " + c.want +
                            "; the other ranks were stopped"),
              std::string::npos)
        << c.how << "\n"
        << r.output;
  }
}

TEST(Spawn, TheRankThatFailedFirstIsNamedNotItsPeers) {
  // Rank 1 fails between two barriers; ranks 0 and 2 then raise DistErrors of their own.
  struct Case {
    std::string how, want;
    int code;
  };
  for (const Case& c : {Case{"raise", "rank 1 of 3 raised: boom between collectives", 1},
                        Case{"exit", "rank 1 of 3 exited with code 3", 3},
                        Case{"abort", "rank 1 of 3 was killed by signal 6 (SIGABRT)", 134}}) {
    const RunResult r = spawn_worker("in_collective_" + c.how, 3);
    EXPECT_EQ(r.code, c.code) << c.how << "\n" << r.output;
    EXPECT_NE(
        r.output.find("SPAWNERROR rank=1 code=" + std::to_string(c.code) + ": spawn: " + c.want),
        std::string::npos)
        << c.how << "\n"
        << r.output;
    EXPECT_EQ(r.output.find("passed a barrier without rank 1"), std::string::npos) << r.output;
  }
}

TEST(Spawn, RefusedOnceThreadsRun) {
  const RunResult r = spawn_worker("after_threads", 2);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("DISTERROR: spawn: this process already runs 2 threads"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("weft-run"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("RANK "), std::string::npos) << "no rank may start\n" << r.output;
}

TEST(Spawn, TheDDPTutorialProgram) {
  // examples/ddp_spawn.cpp: spawn twice in one program, each rank one DDP step (the checkpoint
  // demo saves on rank 0 and loads everywhere).
  const RunResult r = run_command(build_dir() + "/examples/ddp_spawn 2", 300);
  ASSERT_EQ(r.code, 0) << r.output;
  for (int rank = 0; rank < 2; ++rank) {
    const std::string k = std::to_string(rank);
    EXPECT_NE(r.output.find("Running basic DDP example on rank " + k + "."), std::string::npos)
        << r.output;
    EXPECT_NE(r.output.find("rank " + k + ": basic step done, loss "), std::string::npos)
        << r.output;
    EXPECT_NE(r.output.find("rank " + k + ": checkpoint step done, loss "), std::string::npos)
        << r.output;
  }
}
