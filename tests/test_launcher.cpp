// weft-run (tools/weft_run/) against real processes: per-rank environment, whole prefixed
// lines, exit-code and signal propagation, stopping the other ranks, restarts, signal
// forwarding and option errors. The launcher and tests/launcher/weft_run_helper are found in
// build/tools/, next to this binary's build/tests/.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "subprocess.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

Clock::time_point after(double seconds) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

fs::path tools_dir() {
  return fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "tools";
}
std::string launcher() { return (tools_dir() / "weft-run").string(); }
std::string helper() { return (tools_dir() / "weft_run_helper").string(); }

// A running weft-run with its stdout and stderr captured; lets a test act on output mid-run.
class Launch {
 public:
  // standalone: weft-run binds a free port for the job's store (as it does for every single-node
  // job), so tests running side by side never meet on the default port.
  explicit Launch(std::vector<std::string> args, bool standalone = true) {
    if (standalone) args.insert(args.begin(), "--standalone");
    args.insert(args.begin(), launcher());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int po[2], pe[2];
    EXPECT_EQ(pipe2(po, O_CLOEXEC), 0);
    EXPECT_EQ(pipe2(pe, O_CLOEXEC), 0);
    start_ = Clock::now();
    pid_ = fork();
    if (pid_ == 0) {  // only async-signal-safe calls: the test binary may have threads
      dup2(po[1], 1);
      dup2(pe[1], 2);
      execv(argv[0], argv.data());
      _exit(126);
    }
    close(po[1]);
    close(pe[1]);
    fd_[0] = po[0];
    fd_[1] = pe[0];
  }
  ~Launch() {
    if (pid_ > 0 && !done_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    for (int fd : fd_)
      if (fd >= 0) close(fd);
  }

  // Reads until stdout contains `needle` (true) or the timeout passes / output ends (false).
  bool wait_for(const std::string& needle, double seconds = 120) {
    auto deadline = after(seconds);
    while (out.find(needle) == std::string::npos) {
      if (Clock::now() >= deadline || !pump(deadline)) return out.find(needle) != std::string::npos;
    }
    return true;
  }

  // Reads both streams to EOF and reaps weft-run; returns its exit code (-1 on timeout).
  int finish(double seconds = 120) {
    auto deadline = after(seconds);
    while (pump(deadline)) {
    }
    if (fd_[0] >= 0 || fd_[1] >= 0) return -1;  // timed out; the destructor kills it
    int status = 0;
    waitpid(pid_, &status, 0);
    done_ = true;
    elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  pid_t pid() const { return pid_; }
  std::string out, err;
  double elapsed = 0;

 private:
  // One poll round; false once both streams hit EOF or the deadline passed.
  bool pump(Clock::time_point deadline) {
    std::vector<pollfd> fds;
    for (int fd : fd_)
      if (fd >= 0) fds.push_back({fd, POLLIN, 0});
    if (fds.empty()) return false;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (ms.count() <= 0) return false;
    if (poll(fds.data(), fds.size(), static_cast<int>(ms.count())) <= 0) return errno == EINTR;
    for (const auto& p : fds) {
      if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
      int k = p.fd == fd_[0] ? 0 : 1;
      char buf[65536];
      ssize_t n = read(fd_[k], buf, sizeof buf);
      if (n > 0) {
        (k == 0 ? out : err).append(buf, static_cast<size_t>(n));
      } else if (n == 0) {
        close(fd_[k]);
        fd_[k] = -1;
      }
    }
    return true;
  }
  pid_t pid_ = -1;
  int fd_[2] = {-1, -1};
  bool done_ = false;
  Clock::time_point start_;
};

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}

// Pids printed as "[rankR]: <word> PID" lines, by rank.
std::map<int, pid_t> pids(const std::string& out, const std::string& word) {
  std::map<int, pid_t> m;
  std::regex re("^\\[rank(\\d+)\\]: " + word + " (\\d+)$");
  for (const auto& l : lines(out)) {
    std::smatch sm;
    if (std::regex_match(l, sm, re)) m[std::stoi(sm[1])] = std::stoi(sm[2]);
  }
  return m;
}

// Dead once it no longer exists or is a zombie (orphans wait for init to reap them).
bool gone(pid_t pid, double seconds = 60) {
  auto deadline = after(seconds);
  while (Clock::now() < deadline) {
    if (kill(pid, 0) != 0 && errno == ESRCH) return true;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(stat, line);
    auto close_paren = line.rfind(')');  // state follows "pid (comm) "
    if (close_paren != std::string::npos && line.size() > close_paren + 2 &&
        line[close_paren + 2] == 'Z')
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

}  // namespace

TEST(Launcher, EnvironmentPerRank) {
  Launch l({"--nproc_per_node=3", "--nnodes", "2", "--node-rank=1", "--master-addr", "10.1.2.3",
            "--master_port", "1234", "--rdzv-timeout", "7", helper(), "env", "--lr=0.1", "x y"},
           false);
  ASSERT_EQ(l.finish(), 0) << l.err;
  for (int local = 0; local < 3; ++local) {
    int rank = 3 + local;
    std::string p = "[rank" + std::to_string(rank) + "]: ";
    for (const std::string& kv : std::vector<std::string>{
             "MASTER_ADDR=10.1.2.3", "MASTER_PORT=1234", "WORLD_SIZE=6",
             "RANK=" + std::to_string(rank), "LOCAL_RANK=" + std::to_string(local),
             "LOCAL_WORLD_SIZE=3", "GROUP_RANK=1", "TORCHELASTIC_RESTART_COUNT=0",
             "WEFT_RESTART_COUNT=0", "WEFT_RDZV_TIMEOUT=7", "ARG0=--lr=0.1", "ARG1=x y"})
      EXPECT_NE(l.out.find(p + kv + "\n"), std::string::npos) << p << kv << "\n" << l.out;
  }
  EXPECT_EQ(lines(l.out).size(), 48u);
  // Several nodes: run id and token are the user's to give alike on every node; none was given.
  EXPECT_NE(l.out.find("[rank3]: WEFT_RUN_ID=<unset>\n"), std::string::npos) << l.out;
  EXPECT_NE(l.out.find("[rank3]: WEFT_STORE_TOKEN=<unset>\n"), std::string::npos) << l.out;
}

// The value of KEY in rank R's "env" output, or "" when absent.
std::string env_of(const std::string& out, int rank, const std::string& key) {
  const std::string p = "[rank" + std::to_string(rank) + "]: " + key + "=";
  const size_t at = out.find(p);
  if (at == std::string::npos) return "";
  const size_t b = at + p.size();
  return out.substr(b, out.find('\n', b) - b);
}

TEST(Launcher, JobIdentityAndTheStorePort) {
  Launch l({"--nproc-per-node", "2", helper(), "env"});
  ASSERT_EQ(l.finish(), 0) << l.err;
  const std::string id = env_of(l.out, 0, "WEFT_RUN_ID"),
                    token = env_of(l.out, 0, "WEFT_STORE_TOKEN");
  EXPECT_TRUE(std::regex_match(id, std::regex("[0-9a-f]{16}"))) << l.out;
  EXPECT_TRUE(std::regex_match(token, std::regex("[0-9a-f]{32}"))) << l.out;
  EXPECT_EQ(env_of(l.out, 1, "WEFT_RUN_ID"), id);
  EXPECT_EQ(env_of(l.out, 1, "WEFT_STORE_TOKEN"), token);
  // Only rank 0 gets the listening socket weft-run bound for the store.
  EXPECT_TRUE(std::regex_match(env_of(l.out, 0, "WEFT_STORE_LISTEN_FD"), std::regex("[0-9]+")));
  EXPECT_EQ(env_of(l.out, 1, "WEFT_STORE_LISTEN_FD"), "<unset>");
  EXPECT_NE(env_of(l.out, 0, "MASTER_PORT"), "29500");

  Launch again({"--nproc-per-node", "2", helper(), "env"});
  ASSERT_EQ(again.finish(), 0) << again.err;
  EXPECT_NE(env_of(again.out, 0, "WEFT_RUN_ID"), id);  // random per job
  EXPECT_NE(env_of(again.out, 0, "WEFT_STORE_TOKEN"), token);

  Launch named({"--rdzv-id", "job-42", helper(), "env"});
  ASSERT_EQ(named.finish(), 0) << named.err;
  EXPECT_EQ(env_of(named.out, 0, "WEFT_RUN_ID"), "job-42");
}

TEST(Launcher, ProgressBarsReachATerminal) {
  // Under a pseudo-terminal (script(1)), rank 0 is told so and its '\r' redraws pass at once,
  // each with the prefix; the other ranks and a pipe get neither.
  const std::string cmd = launcher() + " --standalone --nproc-per-node 2 " + helper() + " ";
  auto tty = weft::test::run_command("script -qec '" + cmd + "env' /dev/null");
  EXPECT_NE(tty.output.find("[rank0]: WEFT_STDOUT_IS_TTY=1"), std::string::npos) << tty.output;
  EXPECT_NE(tty.output.find("[rank1]: WEFT_STDOUT_IS_TTY=<unset>"), std::string::npos);
  auto bar = weft::test::run_command("script -qec '" + cmd + "redraw' /dev/null");
  EXPECT_NE(bar.output.find("[rank0]: step 1\r[rank0]: step 2\r[rank0]: done"), std::string::npos)
      << bar.output;
  Launch piped({"--nproc-per-node", "2", helper(), "env"});
  ASSERT_EQ(piped.finish(), 0);
  EXPECT_EQ(env_of(piped.out, 0, "WEFT_STDOUT_IS_TTY"), "<unset>");
}

TEST(Launcher, PortInUseFailsAtOnceNamingIt) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const std::string port = std::to_string(ntohs(a.sin_port));
  Launch l({"--nproc-per-node", "2", "--master-port", port, helper(), "env"}, false);
  EXPECT_EQ(l.finish(), 1);
  EXPECT_NE(l.err.find("error: port " + port + " on 127.0.0.1 is in use"), std::string::npos)
      << l.err;
  EXPECT_EQ(l.out, "");  // no rank started
  close(fd);
}

TEST(Launcher, ProgramsThatBindTheStorePortThemselves) {
  // weft's own program gets the held socket, so binding the port itself fails ...
  Launch held({"--nproc-per-node", "2", helper(), "bind"});
  EXPECT_NE(held.finish(), 0);
  EXPECT_NE(held.out.find("[rank0]: bind failed: Address already in use"), std::string::npos)
      << held.out;
  // ... while with --no-store-handoff, as for PyTorch scripts, the port is free for rank 0.
  Launch own({"--no-store-handoff", "--nproc-per-node", "2", helper(), "bind"});
  EXPECT_EQ(own.finish(), 0) << own.out << own.err;
  EXPECT_NE(own.out.find("[rank0]: bound"), std::string::npos) << own.out;
  Launch env({"--no-store-handoff", helper(), "env"});
  ASSERT_EQ(env.finish(), 0);
  EXPECT_EQ(env_of(env.out, 0, "WEFT_STORE_LISTEN_FD"), "<unset>");
  // A Python interpreter is taken for a PyTorch program without the flag.
  const std::string bind =
      "import os, socket; s = socket.socket(); "
      "s.bind((os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']))); print('bound')";
  Launch py({"/usr/bin/python3", "-c", bind});
  EXPECT_EQ(py.finish(), 0) << py.out << py.err;
  EXPECT_NE(py.out.find("bound"), std::string::npos) << py.out;
}

TEST(Launcher, Defaults) {
  Launch l({helper(), "env"}, false);
  ASSERT_EQ(l.finish(), 0) << l.err;
  for (const char* kv : {"MASTER_ADDR=127.0.0.1", "WORLD_SIZE=1", "RANK=0", "LOCAL_RANK=0",
                         "LOCAL_WORLD_SIZE=1", "GROUP_RANK=0"})
    EXPECT_NE(l.out.find(std::string("[rank0]: ") + kv + "\n"), std::string::npos) << kv;
  // One node without --master-port: a free port, as with --standalone (not 29500).
  EXPECT_TRUE(std::regex_search(l.out, std::regex("\\[rank0\\]: MASTER_PORT=[0-9]+\n")));
  EXPECT_EQ(l.out.find("MASTER_PORT=29500"), std::string::npos) << l.out;
  EXPECT_EQ(l.err, "");
}

TEST(Launcher, WholePrefixedLinesNoInterleaving) {
  const int kRanks = 4, kLines = 3000;
  Launch l({"--nproc-per-node", std::to_string(kRanks), helper(), "spam", std::to_string(kLines)});
  ASSERT_EQ(l.finish(), 0) << l.err.substr(0, 2000);
  for (auto [text, tag] : {std::pair{&l.out, "out"}, std::pair{&l.err, "err"}}) {
    std::regex re(std::string("^\\[rank(\\d)\\]: ") + tag + " (\\d) (\\d+) ([a-z]+)$");
    std::vector<int> next(kRanks, 0);
    for (const auto& line : lines(*text)) {
      std::smatch m;
      ASSERT_TRUE(std::regex_match(line, m, re)) << tag << ": '" << line << "'";
      int r = std::stoi(m[1]);
      ASSERT_EQ(std::stoi(m[2]), r) << line;
      ASSERT_EQ(std::stoi(m[3]), next[r]++) << line;  // each rank's lines in order, none lost
      ASSERT_EQ(m[4].str(), std::string(40, static_cast<char>('a' + r))) << line;
    }
    for (int r = 0; r < kRanks; ++r) EXPECT_EQ(next[r], kLines) << tag << " rank " << r;
  }
}

TEST(Launcher, PartialLastLineIsFlushed) {
  Launch l({"--nproc-per-node", "2", helper(), "tail"});
  ASSERT_EQ(l.finish(), 0) << l.err;
  for (const char* r : {"[rank0]: ", "[rank1]: "}) {
    EXPECT_NE(l.out.find(std::string(r) + "complete\n"), std::string::npos) << l.out;
    EXPECT_NE(l.out.find(std::string(r) + "no newline\n"), std::string::npos) << l.out;
  }
  Launch np({"--no-prefix", helper(), "tail"});
  ASSERT_EQ(np.finish(), 0);
  EXPECT_EQ(np.out, "complete\nno newline\n");
}

TEST(Launcher, ExitCodeAndFailedRankAreReported) {
  Launch l({"--nproc-per-node", "3", helper(), "exit-rank", "1", "3"});
  EXPECT_EQ(l.finish(), 3);  // returning at all: the sleeping ranks were stopped, not waited for
  std::regex re("weft-run: failed: rank 1 \\(local 1, pid \\d+\\) exited with code 3\n");
  EXPECT_TRUE(std::regex_search(l.err, re)) << l.err;
}

TEST(Launcher, KilledRankStopsTheOthers) {
  Launch l({"--nproc-per-node", "3", helper(), "sleep"});
  ASSERT_TRUE(l.wait_for("[rank0]: pid") && l.wait_for("[rank1]: pid") &&
              l.wait_for("[rank2]: pid"))
      << l.out << l.err;
  auto p = pids(l.out, "pid");
  ASSERT_EQ(p.size(), 3u);
  ASSERT_EQ(kill(p[1], SIGKILL), 0);
  EXPECT_EQ(l.finish(), 128 + SIGKILL);
  EXPECT_NE(l.err.find("rank 1 (local 1, pid " + std::to_string(p[1]) +
                       ") was killed by signal 9 (SIGKILL)"),
            std::string::npos)
      << l.err;
  EXPECT_TRUE(gone(p[0]));
  EXPECT_TRUE(gone(p[2]));
}

TEST(Launcher, SigkillAfterGracePeriod) {
  // Rank 1 ignores SIGTERM; the launcher must escalate after --grace-period.
  Launch l({"--nproc-per-node", "2", "--grace-period", "0.5", helper(), "ignore-term"});
  ASSERT_TRUE(l.wait_for("[rank0]: pid") && l.wait_for("[rank1]: pid")) << l.out << l.err;
  auto p = pids(l.out, "pid");
  ASSERT_EQ(kill(p[0], SIGKILL), 0);
  EXPECT_EQ(l.finish(), 128 + SIGKILL);
  EXPECT_GE(l.elapsed, 0.4);  // not before the grace period; that it ended at all is the SIGKILL
  EXPECT_TRUE(gone(p[1]));
}

TEST(Launcher, GrandchildrenAreStopped) {
  Launch l({"--nproc-per-node", "2", helper(), "grandchild", "1", "2"});
  EXPECT_EQ(l.finish(), 2) << l.err;
  auto g = pids(l.out, "grandchild");
  ASSERT_EQ(g.size(), 2u) << l.out;
  for (auto [rank, pid] : g) EXPECT_TRUE(gone(pid)) << "grandchild of rank " << rank;
}

TEST(Launcher, MaxRestarts) {
  Launch ok({"--nproc-per-node", "2", "--max-restarts", "2", helper(), "fail-until", "2"});
  EXPECT_EQ(ok.finish(), 0) << ok.err;
  EXPECT_NE(ok.out.find("[rank0]: restart 2 ok\n"), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("[rank1]: restart 2 ok\n"), std::string::npos) << ok.out;
  EXPECT_NE(ok.err.find("restart 2 of 2"), std::string::npos) << ok.err;

  Launch fail({"--max-restarts", "1", helper(), "fail-until", "2"});
  EXPECT_EQ(fail.finish(), 1);
  EXPECT_NE(fail.err.find("restart 1 of 1"), std::string::npos) << fail.err;
  EXPECT_NE(fail.err.find("failed: rank 0"), std::string::npos) << fail.err;
}

TEST(Launcher, ForwardsSigterm) {
  Launch l({"--nproc-per-node", "2", helper(), "sleep"});
  ASSERT_TRUE(l.wait_for("[rank0]: pid") && l.wait_for("[rank1]: pid")) << l.out << l.err;
  auto p = pids(l.out, "pid");
  ASSERT_EQ(kill(l.pid(), SIGTERM), 0);
  EXPECT_EQ(l.finish(), 128 + SIGTERM);
  EXPECT_NE(l.err.find("got SIGTERM"), std::string::npos) << l.err;
  for (auto [rank, pid] : p) EXPECT_TRUE(gone(pid)) << "rank " << rank;
}

TEST(Launcher, MissingProgram) {
  Launch l({"--nproc-per-node", "2", "/nonexistent/weft-program"});
  EXPECT_EQ(l.finish(), 127);
  EXPECT_NE(l.err.find("cannot execute '/nonexistent/weft-program'"), std::string::npos) << l.err;
}

TEST(Launcher, OptionErrors) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--nproc-per-node", "abc", "x"}, "--nproc-per-node expects an integer, got 'abc'"},
      {{"--nproc-per-node", "0", "x"}, "--nproc-per-node must be in [1,"},
      {{"--nnodes", "2", "--node-rank", "2", "x"}, "--node-rank 2 must be less than --nnodes 2"},
      {{"--nnodes", "1:4", "x"}, "--nnodes 1:4: elastic ranges are not supported"},
      {{"--master-port", "70000", "x"}, "--master-port must be in [1, 65535]"},
      {{"--max-restarts", "-1", "x"}, "--max-restarts must be in [0,"},
      {{"--grace-period", "soon", "x"}, "--grace-period expects a non-negative number"},
      {{"--bogus", "x"}, "unknown option '--bogus'"},
      {{"--no-prefix=1", "x"}, "--no-prefix takes no value"},
      {{"--nnodes"}, "--nnodes needs a value"},
      {{"--nproc-per-node", "2"}, "missing PROGRAM"},
      {{}, "missing PROGRAM"},
  };
  for (const auto& [args, msg] : cases) {
    Launch l(args, false);
    EXPECT_EQ(l.finish(), 2) << msg;
    EXPECT_NE(l.err.find("weft-run: error: " + msg), std::string::npos) << l.err;
    EXPECT_EQ(l.out, "");
  }
  Launch h({"--help"}, false);
  EXPECT_EQ(h.finish(), 0);
  EXPECT_EQ(h.out.rfind("usage: weft-run", 0), 0u) << h.out;
}
