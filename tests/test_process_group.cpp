// Multi-process tests of weft::dist's process groups: real processes (weft_pg_worker, built next
// to this binary) rendezvous on 127.0.0.1 through env:// or file://, or run under mpirun, and
// check collectives against closed forms; fault scenarios check that a dead, stalled or
// misconfigured rank yields a DistError within the timeout instead of a hang.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "subprocess.h"
#include "weft/distributed/distributed.h"
#include "weft/distributed/gloo/process_group_gloo.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string helper_dir() { return fs::read_symlink("/proc/self/exe").parent_path().string(); }
std::string worker_path() { return helper_dir() + "/weft_pg_worker"; }

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

struct Result {
  int exit_code = -1;  // -signal when killed
  std::string out;
};

class TempDir {
 public:
  TempDir() {
    std::string t = (fs::temp_directory_path() / "weft_pg_XXXXXX").string();
    path_ = mkdtemp(t.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Starts each command with the parent's environment plus its overrides (stdout and stderr to a
// file), waits for all of them up to `deadline`, then kills stragglers (a test never hangs).
std::vector<Result> run_all(const std::vector<std::vector<std::string>>& argvs,
                            const std::vector<std::map<std::string, std::string>>& envs,
                            std::chrono::seconds deadline = std::chrono::seconds(300)) {
  TempDir dir;
  std::vector<pid_t> pids;
  std::vector<std::string> outs;
  for (size_t p = 0; p < argvs.size(); ++p) {
    std::map<std::string, std::string> env;
    for (char** e = environ; *e; ++e) {
      std::string kv(*e);
      const size_t eq = kv.find('=');
      if (eq == std::string::npos) continue;
      const std::string key = kv.substr(0, eq);
      // Never inherit a launcher's identity (the test itself may run under one).
      if (key.rfind("OMPI_", 0) == 0 || key.rfind("PMI", 0) == 0 || key == "RANK" ||
          key == "WORLD_SIZE" || key == "MASTER_ADDR" || key == "MASTER_PORT") {
        continue;
      }
      env[key] = kv.substr(eq + 1);
    }
    for (auto& [k, v] : envs[p]) env[k] = v;
    std::vector<std::string> env_strs;
    for (auto& [k, v] : env) env_strs.push_back(k + "=" + v);
    std::vector<char*> envp, argv;
    for (auto& s : env_strs) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> args = argvs[p];
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);

    outs.push_back(dir.path() + "/out" + std::to_string(p));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, outs.back().c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    EXPECT_EQ(rc, 0) << "posix_spawn " << args[0];
    pids.push_back(rc == 0 ? pid : -1);
  }
  std::vector<Result> res(pids.size());
  std::vector<bool> done(pids.size(), false);
  const auto end = Clock::now() + deadline;
  size_t left = pids.size();
  for (size_t i = 0; i < pids.size(); ++i) {
    if (pids[i] < 0) done[i] = true, --left;
  }
  while (left > 0) {
    for (size_t i = 0; i < pids.size(); ++i) {
      if (done[i]) continue;
      int status = 0;
      if (waitpid(pids[i], &status, WNOHANG) == pids[i]) {
        res[i].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        done[i] = true;
        --left;
      }
    }
    if (left == 0) break;
    if (Clock::now() > end) {
      for (size_t i = 0; i < pids.size(); ++i) {
        if (done[i]) continue;
        kill(pids[i], SIGKILL);
        waitpid(pids[i], nullptr, 0);
        res[i].exit_code = -999;
        ADD_FAILURE() << "process " << i << " hung past the test deadline; killed";
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (size_t i = 0; i < pids.size(); ++i) {
    std::ifstream f(outs[i]);
    std::stringstream ss;
    ss << f.rdbuf();
    res[i].out = ss.str();
  }
  return res;
}

// world_size ranks of `scenario` with env:// on 127.0.0.1 (plus `extra` variables).
std::vector<Result> run_world(int world, const std::string& scenario,
                              std::map<std::string, std::string> extra = {}) {
  const weft::test::HeldPort port;
  std::vector<std::vector<std::string>> argvs;
  std::vector<std::map<std::string, std::string>> envs;
  for (int r = 0; r < world; ++r) {
    argvs.push_back({worker_path(), scenario});
    auto env = extra;
    env["MASTER_ADDR"] = "127.0.0.1";
    env["MASTER_PORT"] = std::to_string(port.port());
    if (r == 0) env["WEFT_STORE_LISTEN_FD"] = port.fd();
    env["RANK"] = std::to_string(r);
    env["WORLD_SIZE"] = std::to_string(world);
    env["LOCAL_RANK"] = std::to_string(r);
    env.emplace("WEFT_TEST_BACKEND", "gloo");
    envs.push_back(env);
  }
  return run_all(argvs, envs);
}

std::string dump(const std::vector<Result>& res) {
  std::string s;
  for (size_t i = 0; i < res.size(); ++i) {
    s += "--- process " + std::to_string(i) + " (exit " + std::to_string(res[i].exit_code) + ")\n" +
         res[i].out;
  }
  return s;
}

void expect_all_ok(const std::vector<Result>& res) {
  for (size_t i = 0; i < res.size(); ++i) {
    EXPECT_EQ(res[i].exit_code, 0) << dump(res);
    EXPECT_NE(res[i].out.find("OK rank="), std::string::npos) << dump(res);
  }
}

long elapsed_ms(const std::string& out) {
  const size_t p = out.find("ELAPSED_MS: ");
  return p == std::string::npos ? -1 : std::stol(out.substr(p + 12));
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

TEST(ProcessGroupGloo, CollectivesWorld2) { expect_all_ok(run_world(2, "collectives")); }
TEST(ProcessGroupGloo, CollectivesWorld3) { expect_all_ok(run_world(3, "collectives")); }
TEST(ProcessGroupGloo, CollectivesWorld4WithSubgroup) {
  auto res = run_world(4, "collectives");
  expect_all_ok(res);
  EXPECT_NE(res[0].out.find("backend=gloo"), std::string::npos) << dump(res);
}

TEST(ProcessGroupGloo, FileInit) {
  TempDir dir;
  auto res = run_world(2, "collectives", {{"WEFT_TEST_INIT", "file://" + dir.path() + "/store"}});
  expect_all_ok(res);
}

TEST(ProcessGroupGloo, DeadPeerFailsOthersWithinTimeout) {
  for (const char* how : {"die", "kill9"}) {
    // A timeout far beyond the test's: the survivors can only fail by seeing the peer go.
    auto res = run_world(3, how, {{"WEFT_TEST_TIMEOUT_MS", "600000"}});
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(res[r].exit_code, 0) << how << "\n" << dump(res);
      const std::string m = lower(res[r].out);
      EXPECT_NE(m.find("disterror: gloo allreduce"), std::string::npos) << dump(res);
      EXPECT_TRUE(m.find("connection") != std::string::npos || m.find("peer") != std::string::npos)
          << "the error should name the lost connection/peer\n"
          << dump(res);
    }
    EXPECT_EQ(res[2].exit_code, std::string(how) == "kill9" ? -SIGKILL : 3) << dump(res);
  }
}

TEST(ProcessGroupGloo, StalledPeerTimesOutInsteadOfHanging) {
  auto res = run_world(2, "stall", {{"WEFT_TEST_TIMEOUT_MS", "2000"}});
  expect_all_ok(res);
  const long ms = elapsed_ms(res[0].out);
  EXPECT_GE(ms, 1800) << dump(res);  // it waited out its timeout, not less
  EXPECT_NE(res[0].out.find("DISTERROR: gloo allreduce"), std::string::npos) << dump(res);
}

TEST(ProcessGroupInit, UnreachableMasterFailsAfterTimeout) {
  // Nobody listens on this port: a non-zero rank's client gives up after the init timeout.
  const int port = free_port();
  auto res = run_all({{worker_path(), "init"}}, {{{"MASTER_ADDR", "127.0.0.1"},
                                                  {"MASTER_PORT", std::to_string(port)},
                                                  {"RANK", "1"},
                                                  {"WORLD_SIZE", "2"},
                                                  {"WEFT_TEST_BACKEND", "gloo"},
                                                  {"WEFT_TEST_TIMEOUT_MS", "1500"}}});
  EXPECT_EQ(res[0].exit_code, 2) << dump(res);
  EXPECT_NE(res[0].out.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << dump(res);
  EXPECT_GE(elapsed_ms(res[0].out), 1400) << dump(res);
  // While it waits it says so (every third of a short timeout, ~10 s otherwise).
  EXPECT_NE(res[0].out.find("[weft] rank 1: waiting for the store at 127.0.0.1:" +
                            std::to_string(port) + " (Connection refused), "),
            std::string::npos)
      << dump(res);
}

TEST(ProcessGroupInit, AnotherJobOnThePortIsRefusedNamingIt) {
  // Rank 1 belongs to another job (another run id) that was pointed at this job's port.
  const weft::test::HeldPort port;
  std::vector<std::map<std::string, std::string>> envs;
  for (int r = 0; r < 2; ++r) {
    envs.push_back({{"MASTER_ADDR", "127.0.0.1"},
                    {"MASTER_PORT", std::to_string(port.port())},
                    {"RANK", std::to_string(r)},
                    {"WORLD_SIZE", "2"},
                    {"WEFT_RUN_ID", r == 0 ? "job-a" : "job-b"},
                    {"WEFT_TEST_BACKEND", "gloo"},
                    {"WEFT_TEST_TIMEOUT_MS", "3000"}});
  }
  envs[0]["WEFT_STORE_LISTEN_FD"] = port.fd();
  auto res = run_all({{worker_path(), "init"}, {worker_path(), "init"}}, envs);
  EXPECT_EQ(res[1].exit_code, 2) << dump(res);
  EXPECT_NE(res[1].out.find("port " + std::to_string(port.port()) +
                            " is used by another job (run id job-a"),
            std::string::npos)
      << dump(res);
  EXPECT_EQ(res[0].exit_code, 2) << dump(res);
  EXPECT_NE(res[0].out.find("rank(s) 1 did not join"), std::string::npos) << dump(res);
}

// Ranks 0 and 1 of a world of 3 (rank 2 never starts), each with `extra` in its environment;
// both must fail naming rank 2, and each output must contain `expect`.
static void expect_missing_rank_named(const std::map<std::string, std::string>& extra,
                                      const std::string& expect) {
  const weft::test::HeldPort port;
  std::vector<std::map<std::string, std::string>> envs;
  for (int r = 0; r < 2; ++r) {
    envs.push_back({{"MASTER_ADDR", "127.0.0.1"},
                    {"MASTER_PORT", std::to_string(port.port())},
                    {"RANK", std::to_string(r)},
                    {"WORLD_SIZE", "3"},
                    {"WEFT_TEST_BACKEND", "gloo"}});
    envs.back().insert(extra.begin(), extra.end());
  }
  envs[0]["WEFT_STORE_LISTEN_FD"] = port.fd();
  auto res = run_all({{worker_path(), "init"}, {worker_path(), "init"}}, envs);
  for (auto& r : res) {
    EXPECT_EQ(r.exit_code, 2) << dump(res);
    EXPECT_NE(r.out.find("rank(s) 2 did not join"), std::string::npos) << dump(res);
    EXPECT_NE(r.out.find(": waiting for rank(s) 2 to join at 127.0.0.1:"), std::string::npos)
        << dump(res);
    EXPECT_NE(r.out.find(expect), std::string::npos) << dump(res);
  }
}

TEST(ProcessGroupInit, MissingRankNeverJoins) {
  expect_missing_rank_named({{"WEFT_TEST_TIMEOUT_MS", "1500"}}, "1500");
}

TEST(ProcessGroupInit, RendezvousTimeoutFromWeftRun) {
  // WEFT_RDZV_TIMEOUT (weft-run --rdzv-timeout) bounds the wait for a missing rank, whatever
  // the collectives' timeout (10 minutes here); a malformed value is an error naming it.
  expect_missing_rank_named({{"WEFT_TEST_TIMEOUT_MS", "600000"}, {"WEFT_RDZV_TIMEOUT", "1.5"}},
                            "1500");
  std::vector<std::map<std::string, std::string>> envs = {
      {{"MASTER_ADDR", "127.0.0.1"},
       {"MASTER_PORT", std::to_string(free_port())},
       {"RANK", "0"},
       {"WORLD_SIZE", "1"},
       {"WEFT_TEST_BACKEND", "gloo"},
       {"WEFT_RDZV_TIMEOUT", "soon"}}};
  auto res = run_all({{worker_path(), "init"}}, envs);
  EXPECT_EQ(res[0].exit_code, 2) << dump(res);
  EXPECT_NE(res[0].out.find("WEFT_RDZV_TIMEOUT='soon'"), std::string::npos) << dump(res);
}

TEST(ProcessGroupInit, MismatchedWorldSizeNamesTheRank) {
  // Rank 1 believes the world has 3 ranks: both ranks fail at once, each naming the other (the
  // timeout is far beyond the test's, so failing at all means they did not wait it out).
  const weft::test::HeldPort port;
  std::vector<std::map<std::string, std::string>> envs;
  for (int r = 0; r < 2; ++r) {
    envs.push_back({{"MASTER_ADDR", "127.0.0.1"},
                    {"MASTER_PORT", std::to_string(port.port())},
                    {"RANK", std::to_string(r)},
                    {"WORLD_SIZE", r == 1 ? "3" : "2"},
                    {"WEFT_TEST_BACKEND", "gloo"},
                    {"WEFT_TEST_TIMEOUT_MS", "600000"}});
  }
  envs[0]["WEFT_STORE_LISTEN_FD"] = port.fd();
  auto res = run_all({{worker_path(), "init"}, {worker_path(), "init"}}, envs);
  EXPECT_EQ(res[0].exit_code, 2) << dump(res);
  EXPECT_NE(res[0].out.find("rank 1 joined with world_size=3"), std::string::npos) << dump(res);
  EXPECT_EQ(res[1].exit_code, 2) << dump(res);
  EXPECT_NE(res[1].out.find("rank 0 joined with world_size=2"), std::string::npos) << dump(res);
}

TEST(ProcessGroupInit, BadSettingsAreNamed) {
  struct Case {
    std::map<std::string, std::string> env;
    std::string want;
  };
  const std::vector<Case> cases = {
      {{{"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}, {"RANK", "2"}, {"WORLD_SIZE", "2"}},
       "RANK=2 is not below WORLD_SIZE=2"},
      {{{"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}, {"WORLD_SIZE", "2"}},
       "RANK is not set"},
      {{{"MASTER_PORT", "29500"}, {"RANK", "0"}, {"WORLD_SIZE", "2"}}, "MASTER_ADDR is not set"},
      {{{"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "http"}, {"RANK", "0"}, {"WORLD_SIZE", "2"}},
       "MASTER_PORT='http' is not an integer"},
      {{{"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}, {"RANK", "0"}, {"WORLD_SIZE", "0"}},
       "WORLD_SIZE=0 is out of range"},
      {{{"MASTER_ADDR", "127.0.0.1"},
        {"MASTER_PORT", "29500"},
        {"RANK", "0"},
        {"WORLD_SIZE", "1"},
        {"WEFT_TEST_BACKEND", "nccl2"}},
       "unknown backend 'nccl2'"},
  };
  std::vector<std::vector<std::string>> argvs;
  std::vector<std::map<std::string, std::string>> envs;
  for (auto& c : cases) {
    argvs.push_back({worker_path(), "init"});
    auto env = c.env;
    env.emplace("WEFT_TEST_BACKEND", "gloo");
    env["WEFT_TEST_TIMEOUT_MS"] = "600000";  // a bad setting fails before anything waits
    envs.push_back(env);
  }
  auto res = run_all(argvs, envs);
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(res[i].exit_code, 2) << cases[i].want << "\n" << res[i].out;
    EXPECT_NE(res[i].out.find(cases[i].want), std::string::npos) << res[i].out;
  }
}

TEST(ProcessGroupInit, WorldOfOneInProcess) {
  // The library in this very process: world 1 needs no peers.
  using namespace weft::dist;
  ASSERT_FALSE(is_initialized());
  EXPECT_EQ(get_rank(), 0);
  EXPECT_EQ(get_world_size(), 1);
  EXPECT_THROW(default_group(), DistError);
  InitOptions o;
  o.backend = "gloo";
  o.init_method = "tcp://127.0.0.1:" + std::to_string(free_port());
  o.rank = 0;
  o.world_size = 1;
  o.timeout = std::chrono::seconds(10);
  init_process_group(o);
  ASSERT_TRUE(is_initialized());
  EXPECT_THROW(init_process_group(o), DistError);
  auto pg = default_group();
  weft::Tensor t = weft::make_empty({3}, weft::kFloat32);
  t.fill_(2.0);
  pg->allreduce({t}, ReduceOp::AVG)->wait();
  EXPECT_EQ(t.to_vector_float()[2], 2.0f);
  auto sub = new_group({0});
  ASSERT_TRUE(sub);
  sub->barrier()->wait();
  EXPECT_THROW(new_group({1}), DistError);
  sub.reset();
  pg.reset();
  destroy_process_group();
  EXPECT_FALSE(is_initialized());
}

TEST(ProcessGroupMPI, CollectivesUnderMpirun) {
  const char* candidates[] = {"/usr/bin/mpirun", "/usr/local/bin/mpirun"};
  std::string mpirun;
  for (const char* c : candidates) {
    if (access(c, X_OK) == 0) mpirun = c;
  }
  if (mpirun.empty())
    GTEST_SKIP() << "mpirun not found (install openmpi-bin); MPI backend untested";
  for (int n : {2, 3}) {
    // Backend "" must pick MPI from mpirun's environment; stdout of all ranks comes to us.
    auto res = run_all({{mpirun, "--allow-run-as-root", "--oversubscribe", "-n", std::to_string(n),
                         "--mca", "btl", "self,tcp", worker_path(), "collectives"}},
                       {{{"WEFT_TEST_BACKEND", ""}}});
    EXPECT_EQ(res[0].exit_code, 0) << res[0].out;
    for (int r = 0; r < n; ++r) {
      const std::string want =
          "OK rank=" + std::to_string(r) + " size=" + std::to_string(n) + " backend=mpi";
      EXPECT_NE(res[0].out.find(want), std::string::npos) << res[0].out;
    }
  }
}
