// weft-run: a torchrun-compatible launcher. Starts --nproc-per-node copies of PROGRAM with the
// env:// rendezvous variables set, prefixes every output line with "[rankR]: ", and when one
// rank fails stops the others (SIGTERM, then SIGKILL after a grace period) and exits with that
// rank's status. Standard library and POSIX only; one thread, one poll() loop, so output lines
// can never interleave.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kUsage = R"(usage: weft-run [options] PROGRAM [ARGS...]

Starts nproc-per-node copies of PROGRAM on this node with torchrun's environment:
MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK,
GROUP_WORLD_SIZE, ROLE_RANK, ROLE_WORLD_SIZE, TORCHELASTIC_RESTART_COUNT, WEFT_RESTART_COUNT,
TORCHELASTIC_MAX_RESTARTS (and WEFT_RDZV_TIMEOUT, OMP_NUM_THREADS; see below).
Every line a rank writes is prefixed "[rankR]: " (R = global rank) on the same stream.
If a rank exits non-zero or dies of a signal, the others get SIGTERM, then SIGKILL after the
grace period, and weft-run exits with that rank's code (128+N for signal N).

options (torchrun's underscore spellings and --opt=value also work):
  --nproc-per-node N   processes on this node (default 1; "auto"/"cpu": one per CPU)
  --nnodes M           number of nodes (default 1; "M:M" accepted, elastic ranges are not)
  --node-rank R        this node's rank, 0 <= R < M (default 0)
  --master-addr A      rank 0's host (default 127.0.0.1)
  --master-port P      rank 0's port (default 29500)
  --rdzv-endpoint A:P  same as --master-addr A --master-port P
  --standalone         single node on 127.0.0.1 with a free port
  --max-restarts K     restart the local group up to K times after a failure (default 0)
  --rdzv-timeout S     exported as WEFT_RDZV_TIMEOUT (seconds) for init_process_group
  --grace-period S     seconds between SIGTERM and SIGKILL when stopping ranks (default 5)
  --no-prefix          do not prefix output lines (lines are still kept whole)
  -h, --help           show this help
OMP_NUM_THREADS, if unset and N > 1, is set to max(1, CPUs / N) so ranks do not oversubscribe.
SIGINT, SIGTERM and SIGHUP are forwarded to every rank's process group; a second one kills.
)";

struct Options {
  int nproc = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  int max_restarts = 0;
  std::optional<double> rdzv_timeout;
  double grace = 5.0;
  bool prefix = true;
  bool standalone = false;
  std::vector<std::string> command;  // PROGRAM ARGS...
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "weft-run: error: %s\n(see weft-run --help)\n", msg.c_str());
  std::exit(2);
}

long parse_int(const std::string& opt, const std::string& v, long lo, long hi) {
  errno = 0;
  char* end = nullptr;
  long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE)
    usage_error(opt + " expects an integer, got '" + v + "'");
  if (x < lo || x > hi)
    usage_error(opt + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                v);
  return x;
}

double parse_seconds(const std::string& opt, const std::string& v) {
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(x) || x < 0)
    usage_error(opt + " expects a non-negative number of seconds, got '" + v + "'");
  return x;
}

int cpu_count() { return std::max(1u, std::thread::hardware_concurrency()); }

// A port nobody listens on right now (for --standalone); the kernel picks it.
int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    std::fprintf(stderr, "weft-run: error: cannot find a free port: %s\n", std::strerror(errno));
    std::exit(1);
  }
  close(fd);
  return ntohs(a.sin_port);
}

Options parse_args(int argc, char** argv) {
  Options o;
  bool node_rank_set = false;
  int i = 1;
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (arg.size() < 2 || arg[0] != '-') break;  // PROGRAM: the rest belongs to it
    if (arg[1] != '-') usage_error("unknown option '" + arg + "'");
    std::string name = arg, value;
    bool has_value = false;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    std::replace(name.begin(), name.end(), '_', '-');  // torchrun accepts both spellings
    auto flag = [&] {
      if (has_value) usage_error(name + " takes no value");
    };
    auto next = [&]() -> std::string {
      if (has_value) return value;
      if (i + 1 >= argc) usage_error(name + " needs a value");
      return argv[++i];
    };
    if (name == "--nproc-per-node") {
      std::string v = next();
      o.nproc = (v == "auto" || v == "cpu") ? cpu_count() : parse_int(name, v, 1, 4096);
    } else if (name == "--nnodes") {
      std::string v = next();
      if (auto c = v.find(':'); c != std::string::npos) {
        long lo = parse_int(name, v.substr(0, c), 1, 1 << 20);
        long hi = parse_int(name, v.substr(c + 1), 1, 1 << 20);
        if (lo != hi) usage_error("--nnodes " + v + ": elastic ranges are not supported");
        o.nnodes = static_cast<int>(lo);
      } else {
        o.nnodes = static_cast<int>(parse_int(name, v, 1, 1 << 20));
      }
    } else if (name == "--node-rank") {
      o.node_rank = static_cast<int>(parse_int(name, next(), 0, 1 << 20));
      node_rank_set = true;
    } else if (name == "--master-addr") {
      o.master_addr = next();
      if (o.master_addr.empty()) usage_error("--master-addr is empty");
    } else if (name == "--master-port") {
      o.master_port = static_cast<int>(parse_int(name, next(), 1, 65535));
    } else if (name == "--rdzv-endpoint") {
      std::string v = next();
      auto c = v.rfind(':');
      if (c == std::string::npos || c == 0) usage_error("--rdzv-endpoint expects HOST:PORT");
      o.master_addr = v.substr(0, c);
      o.master_port = static_cast<int>(parse_int(name, v.substr(c + 1), 1, 65535));
    } else if (name == "--standalone") {
      flag();
      o.standalone = true;
    } else if (name == "--max-restarts") {
      o.max_restarts = static_cast<int>(parse_int(name, next(), 0, 1 << 20));
    } else if (name == "--rdzv-timeout") {
      o.rdzv_timeout = parse_seconds(name, next());
    } else if (name == "--grace-period") {
      o.grace = parse_seconds(name, next());
    } else if (name == "--no-prefix") {
      flag();
      o.prefix = false;
    } else {
      usage_error("unknown option '" + arg + "'");
    }
  }
  for (; i < argc; ++i) o.command.emplace_back(argv[i]);
  if (o.command.empty()) usage_error("missing PROGRAM to run");
  if (o.standalone) {
    if (o.nnodes != 1 || (node_rank_set && o.node_rank != 0))
      usage_error("--standalone runs a single node (--nnodes 1 --node-rank 0)");
    o.master_addr = "127.0.0.1";
    o.master_port = free_port();
  }
  if (o.node_rank >= o.nnodes)
    usage_error("--node-rank " + std::to_string(o.node_rank) + " must be less than --nnodes " +
                std::to_string(o.nnodes));
  if (static_cast<long long>(o.nnodes) * o.nproc > 1 << 24) usage_error("world size too large");
  return o;
}

// Signals reach the poll loop through a self-pipe: the handler only write()s the number.
int g_sig_pipe[2] = {-1, -1};

void on_signal(int sig) {
  int saved = errno;
  unsigned char b = static_cast<unsigned char>(sig);
  [[maybe_unused]] ssize_t r = write(g_sig_pipe[1], &b, 1);
  errno = saved;
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGHUP:
      return "SIGHUP";
    case SIGINT:
      return "SIGINT";
    case SIGQUIT:
      return "SIGQUIT";
    case SIGILL:
      return "SIGILL";
    case SIGTRAP:
      return "SIGTRAP";
    case SIGABRT:
      return "SIGABRT";
    case SIGBUS:
      return "SIGBUS";
    case SIGFPE:
      return "SIGFPE";
    case SIGKILL:
      return "SIGKILL";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGSEGV:
      return "SIGSEGV";
    case SIGUSR2:
      return "SIGUSR2";
    case SIGPIPE:
      return "SIGPIPE";
    case SIGALRM:
      return "SIGALRM";
    case SIGTERM:
      return "SIGTERM";
    case SIGXCPU:
      return "SIGXCPU";
    default:
      return "unknown signal";
  }
}

void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  // our own stdout/stderr is gone; keep supervising anyway
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void message(const std::string& s) {
  std::string line = "weft-run: " + s + "\n";
  write_all(2, line.data(), line.size());
}

// One child stream (stdout or stderr) read through a pipe and re-emitted line by line.
struct Stream {
  int fd = -1;
  int out_fd = 1;  // where its lines go
  std::string buf;
};

// Lines longer than this are emitted in pieces, so a child that never writes '\n' cannot make
// weft-run's memory grow without bound.
constexpr size_t kMaxLine = 1 << 20;

struct Rank {
  int local = 0, global = 0;
  pid_t pid = -1;
  bool running = false;
  Stream out, err;
};

class Group {
 public:
  Group(const Options& o, int restart) : o_(o), restart_(restart) {}

  // Runs the local group to completion. Returns the wait status of the first rank that
  // failed, or nullopt when all exited 0 (or were stopped by a forwarded signal).
  std::optional<int> run();
  int interrupted() const { return interrupted_; }
  const std::string& failure_description() const { return failure_desc_; }

 private:
  void spawn(Rank& r);
  void on_readable(Rank& r, Stream& s);
  void flush(Rank& r, Stream& s, bool final);
  void reap();
  void signal_all(int sig);
  void begin_stop();
  std::string describe(const Rank& r, int status) const;

  const Options& o_;
  int restart_;
  std::vector<Rank> ranks_;
  std::optional<int> failure_;
  std::string failure_desc_;
  int interrupted_ = 0;
  bool stopping_ = false, killed_ = false;
  Clock::time_point kill_at_;
};

void Group::spawn(Rank& r) {
  int po[2], pe[2];
  if (pipe2(po, O_CLOEXEC) != 0 || pipe2(pe, O_CLOEXEC) != 0) {
    message(std::string("cannot create pipes: ") + std::strerror(errno));
    std::exit(1);
  }
  // Everything the child needs is built before fork, so the child only sets and execs.
  std::vector<std::pair<std::string, std::string>> env = {
      {"MASTER_ADDR", o_.master_addr},
      {"MASTER_PORT", std::to_string(o_.master_port)},
      {"WORLD_SIZE", std::to_string(o_.nnodes * o_.nproc)},
      {"RANK", std::to_string(r.global)},
      {"LOCAL_RANK", std::to_string(r.local)},
      {"LOCAL_WORLD_SIZE", std::to_string(o_.nproc)},
      {"GROUP_RANK", std::to_string(o_.node_rank)},
      {"GROUP_WORLD_SIZE", std::to_string(o_.nnodes)},
      {"ROLE_NAME", "default"},
      {"ROLE_RANK", std::to_string(r.global)},
      {"ROLE_WORLD_SIZE", std::to_string(o_.nnodes * o_.nproc)},
      {"TORCHELASTIC_RESTART_COUNT", std::to_string(restart_)},
      {"TORCHELASTIC_MAX_RESTARTS", std::to_string(o_.max_restarts)},
      {"WEFT_RESTART_COUNT", std::to_string(restart_)},
  };
  if (o_.rdzv_timeout) {
    char b[64];
    std::snprintf(b, sizeof b, "%g", *o_.rdzv_timeout);
    env.emplace_back("WEFT_RDZV_TIMEOUT", b);
  }
  if (o_.nproc > 1 && !std::getenv("OMP_NUM_THREADS"))
    env.emplace_back("OMP_NUM_THREADS", std::to_string(std::max(1, cpu_count() / o_.nproc)));
  std::vector<char*> argv;
  for (const auto& a : o_.command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t parent = getpid();

  // Signals stay blocked across fork until the child has reset its handlers: a SIGTERM from
  // signal_all() arriving in between would otherwise run on_signal() in the child and write
  // into our self-pipe, as if weft-run itself had been told to stop.
  sigset_t handled, old_mask;
  sigemptyset(&handled);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&handled, s);
  sigprocmask(SIG_BLOCK, &handled, &old_mask);
  pid_t pid = fork();
  if (pid < 0) {
    message(std::string("fork failed: ") + std::strerror(errno));
    std::exit(1);
  }
  if (pid != 0) sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  if (pid == 0) {
    // Own process group, so one killpg() reaches the rank's grandchildren too.
    setpgid(0, 0);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGPIPE}) signal(s, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
#ifdef __linux__
    // If weft-run itself is SIGKILLed, the rank must not live on unsupervised.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
#else
    (void)parent;
#endif
    dup2(po[1], 1);
    dup2(pe[1], 2);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    execvp(argv[0], argv.data());
    std::string e =
        "weft-run: cannot execute '" + o_.command[0] + "': " + std::strerror(errno) + "\n";
    write_all(2, e.data(), e.size());
    _exit(127);
  }
  setpgid(pid, pid);  // also here: no window where a killpg() would miss the child
  close(po[1]);
  close(pe[1]);
  fcntl(po[0], F_SETFL, O_NONBLOCK);
  fcntl(pe[0], F_SETFL, O_NONBLOCK);
  r.pid = pid;
  r.running = true;
  r.out = {po[0], 1, {}};
  r.err = {pe[0], 2, {}};
}

// Emits every complete line in the buffer (all in one write, so nothing can split them);
// with `final` also the partial last line, terminated by a newline.
void Group::flush(Rank& r, Stream& s, bool final) {
  std::string prefix = o_.prefix ? "[rank" + std::to_string(r.global) + "]: " : "";
  std::string outbuf;
  size_t start = 0;
  for (;;) {
    size_t nl = s.buf.find('\n', start);
    if (nl == std::string::npos) {
      bool too_long = s.buf.size() - start >= kMaxLine;
      if ((final || too_long) && start < s.buf.size()) {
        outbuf += prefix;
        outbuf.append(s.buf, start, std::string::npos);
        outbuf += '\n';
        start = s.buf.size();
      }
      break;
    }
    outbuf += prefix;
    outbuf.append(s.buf, start, nl + 1 - start);
    start = nl + 1;
  }
  s.buf.erase(0, start);
  write_all(s.out_fd, outbuf.data(), outbuf.size());
}

// One read per wakeup, so a rank that writes without pause cannot starve the others.
void Group::on_readable(Rank& r, Stream& s) {
  char chunk[65536];
  ssize_t n = read(s.fd, chunk, sizeof chunk);
  while (n < 0 && errno == EINTR) n = read(s.fd, chunk, sizeof chunk);
  if (n > 0) {
    s.buf.append(chunk, static_cast<size_t>(n));
    flush(r, s, false);
  } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
    flush(r, s, true);  // EOF (or error): the stream is done
    close(s.fd);
    s.fd = -1;
  }
}

std::string Group::describe(const Rank& r, int status) const {
  std::string who = "rank " + std::to_string(r.global) + " (local " + std::to_string(r.local) +
                    ", pid " + std::to_string(r.pid) + ")";
  if (WIFEXITED(status)) return who + " exited with code " + std::to_string(WEXITSTATUS(status));
  int sig = WTERMSIG(status);
  return who + " was killed by signal " + std::to_string(sig) + " (" + signal_name(sig) + ")" +
         (WCOREDUMP(status) ? " (core dumped)" : "");
}

// Signals every rank's process group. Groups of ranks that already exited are included on
// purpose: their leftover grandchildren still hold the group id.
void Group::signal_all(int sig) {
  for (auto& r : ranks_)
    if (r.pid > 0) killpg(r.pid, sig);
}

void Group::begin_stop() {
  stopping_ = true;
  kill_at_ = Clock::now() +
             std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.grace));
}

void Group::reap() {
  for (;;) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    auto it =
        std::find_if(ranks_.begin(), ranks_.end(), [&](const Rank& r) { return r.pid == pid; });
    if (it == ranks_.end()) continue;
    it->running = false;
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (ok || stopping_) continue;  // ranks dying after we began stopping are not the cause
    failure_ = status;
    failure_desc_ = describe(*it, status);
    int others = static_cast<int>(
        std::count_if(ranks_.begin(), ranks_.end(), [](const Rank& r) { return r.running; }));
    message(
        failure_desc_ +
        (others ? "; sending SIGTERM to the other " + std::to_string(others) + " rank(s)" : ""));
    signal_all(SIGTERM);
    begin_stop();
  }
}

std::optional<int> Group::run() {
  ranks_.resize(o_.nproc);
  for (int l = 0; l < o_.nproc; ++l) {
    ranks_[l].local = l;
    ranks_[l].global = o_.node_rank * o_.nproc + l;
    spawn(ranks_[l]);
  }
  std::optional<Clock::time_point> drain_until;
  for (;;) {
    reap();
    bool any_running =
        std::any_of(ranks_.begin(), ranks_.end(), [](const Rank& r) { return r.running; });
    bool any_open = std::any_of(ranks_.begin(), ranks_.end(),
                                [](const Rank& r) { return r.out.fd >= 0 || r.err.fd >= 0; });
    if (!any_running && !drain_until) {
      // Every rank is reaped: whatever is left in their groups is an orphaned grandchild that
      // could hold the pipes open forever.
      signal_all(SIGKILL);
      drain_until = Clock::now() + std::chrono::seconds(1);
    }
    auto now = Clock::now();
    if (!any_running && (!any_open || now >= *drain_until)) break;
    if (stopping_ && !killed_ && now >= kill_at_) {
      signal_all(SIGKILL);
      killed_ = true;
    }

    std::vector<pollfd> fds = {{g_sig_pipe[0], POLLIN, 0}};
    std::vector<std::pair<Rank*, Stream*>> owners = {{nullptr, nullptr}};
    for (auto& r : ranks_)
      for (Stream* s : {&r.out, &r.err})
        if (s->fd >= 0) {
          fds.push_back({s->fd, POLLIN, 0});
          owners.emplace_back(&r, s);
        }
    int timeout_ms = -1;
    auto until = [&](Clock::time_point t) {
      auto ms = std::chrono::ceil<std::chrono::milliseconds>(t - now).count();
      int v = static_cast<int>(std::clamp<long long>(ms, 0, 1 << 30));
      timeout_ms = timeout_ms < 0 ? v : std::min(timeout_ms, v);
    };
    if (stopping_ && !killed_) until(kill_at_);
    if (drain_until) until(*drain_until);
    if (poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) {
      message(std::string("poll failed: ") + std::strerror(errno));
      signal_all(SIGKILL);
      std::exit(1);
    }
    if (fds[0].revents & POLLIN) {
      unsigned char sigs[64];
      ssize_t n = read(g_sig_pipe[0], sigs, sizeof sigs);
      for (ssize_t k = 0; k < n; ++k) {
        int sig = sigs[k];
        if (sig == SIGCHLD) continue;  // reap() runs at the top of every iteration
        if (interrupted_) {
          message(std::string("got ") + signal_name(sig) + " again; killing all ranks");
          signal_all(SIGKILL);
          killed_ = true;
          continue;
        }
        interrupted_ = sig;
        if (!stopping_) {
          message(std::string("got ") + signal_name(sig) + "; forwarding it to all ranks");
          signal_all(sig);
          begin_stop();
        }
      }
    }
    for (size_t k = 1; k < fds.size(); ++k)
      if (fds[k].revents & (POLLIN | POLLHUP | POLLERR))
        on_readable(*owners[k].first, *owners[k].second);
  }
  for (auto& r : ranks_)
    for (Stream* s : {&r.out, &r.err})
      if (s->fd >= 0) {
        flush(r, *s, true);
        close(s->fd);
        s->fd = -1;
      }
  return failure_;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse_args(argc, argv);

  if (pipe2(g_sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    std::perror("weft-run: pipe");
    return 1;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaction(s, &sa, nullptr);
  // A closed stdout must not kill the supervisor and leave the ranks unattended.
  signal(SIGPIPE, SIG_IGN);

  for (int restart = 0;; ++restart) {
    Group g(o, restart);
    std::optional<int> failure = g.run();
    int code = 0;
    if (failure) code = WIFEXITED(*failure) ? WEXITSTATUS(*failure) : 128 + WTERMSIG(*failure);
    if (g.interrupted()) {
      if (failure) message(g.failure_description());
      message(std::string("stopped by ") + signal_name(g.interrupted()));
      return failure ? code : 128 + g.interrupted();
    }
    if (!failure) return 0;
    if (restart < o.max_restarts) {
      message("restarting the local group (restart " + std::to_string(restart + 1) + " of " +
              std::to_string(o.max_restarts) + ")");
      continue;
    }
    std::string tail =
        o.max_restarts > 0 ? " (after " + std::to_string(o.max_restarts) + " restart(s))" : "";
    message("failed: " + g.failure_description() + tail);
    return code;
  }
}
