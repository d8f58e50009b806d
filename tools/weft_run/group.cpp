#include "group.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "report.h"

namespace weft_run {

namespace {

// Lines longer than this are emitted in pieces, so a child that never writes '\n' cannot make
// weft-run's memory grow without bound.
constexpr size_t kMaxLine = 1 << 20;

}  // namespace

// torchrun's environment for rank r (and WEFT_RDZV_TIMEOUT, OMP_NUM_THREADS; see the usage).
std::vector<std::pair<std::string, std::string>> Group::child_env(const Rank& r) const {
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
  // weft-train draws its progress bar when told that weft-run's own output is a terminal.
  if (r.global == 0 && stdout_tty_) env.emplace_back("WEFT_STDOUT_IS_TTY", "1");
  if (!o_.run_id.empty()) env.emplace_back("WEFT_RUN_ID", o_.run_id);
  if (!o_.token.empty()) env.emplace_back("WEFT_STORE_TOKEN", o_.token);
  if (o_.store_fd >= 0 && r.global == 0)
    env.emplace_back("WEFT_STORE_LISTEN_FD", std::to_string(o_.store_fd));
  if (o_.nproc > 1 && !std::getenv("OMP_NUM_THREADS"))
    env.emplace_back("OMP_NUM_THREADS", std::to_string(std::max(1, cpu_count() / o_.nproc)));
  return env;
}

void Group::spawn(Rank& r) {
  int po[2], pe[2];
  if (pipe2(po, O_CLOEXEC) != 0 || pipe2(pe, O_CLOEXEC) != 0) {
    message(std::string("cannot create pipes: ") + std::strerror(errno));
    std::exit(1);
  }
  // Everything the child needs is built before fork, so the child only sets and execs.
  const auto env = child_env(r);
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
    // Rank 0 inherits the store's listening socket; the others never see it (close-on-exec).
    if (o_.store_fd >= 0 && r.global == 0) fcntl(o_.store_fd, F_SETFD, 0);
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
  r.out = {po[0], 1, {}, r.global == 0 && stdout_tty_};
  r.err = {pe[0], 2, {}, false};
}

// Emits every complete line in the buffer (all in one write, so nothing can split them);
// with `final` also the partial last line, terminated by a newline. On a terminal, rank 0's
// stdout may also end a piece with '\r' (a progress bar redrawn in place), emitted at once.
void Group::flush(Rank& r, Stream& s, bool final) {
  std::string prefix = o_.prefix ? "[rank" + std::to_string(r.global) + "]: " : "";
  const char* ends = s.redraw ? "\n\r" : "\n";
  std::string outbuf;
  size_t start = 0;
  for (;;) {
    size_t nl = s.buf.find_first_of(ends, start);
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

// Signals that reached weft-run: the first is forwarded to every rank (which then stop), a
// second one kills them all.
void Group::on_signals() {
  unsigned char sigs[64];
  ssize_t n = read(signal_fd_, sigs, sizeof sigs);
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

    std::vector<pollfd> fds = {{signal_fd_, POLLIN, 0}};
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
    if (fds[0].revents & POLLIN) on_signals();
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

}  // namespace weft_run
