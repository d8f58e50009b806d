// The order of failures (spawn_supervisor.h). A rank that raises writes its record before it
// exits, so records alone order the ranks that raise. A rank that crashes or calls exit()
// writes nothing; its peers notice when the kernel closes its sockets, and may raise before its
// exit can be reaped. So each child also holds the write ends of two "life" pipes: one at a
// descriptor below any socket it opens, one moved to a descriptor above them. The kernel closes
// an exiting process's descriptors in order and releases them in that order or its reverse
// (Linux queues the releases and runs the queue last in, first out), so one of the two pipes
// ends before any socket closes, hence before any peer can notice and write a record. Each
// wakeup reads the records, then looks for ended life pipes, then reads the records again (a
// dying rank's own record is in by then): a rank that ended without a record of its own, in the
// wakeup that first sees a record, failed first. Exit statuses are also polled every 100 ms,
// for a child whose life pipes a forked grandchild holds open.
#include "distributed/spawn_supervisor.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "weft/distributed/spawn.h"

namespace weft::dist::detail {

void write_failure_record(int fd, int rank, const std::string& message) {
  char buf[PIPE_BUF];
  const uint32_t len =
      static_cast<uint32_t>(std::min(message.size(), sizeof buf - 2 * sizeof(uint32_t)));
  const int32_t r = rank;
  std::memcpy(buf, &r, 4);
  std::memcpy(buf + 4, &len, 4);
  std::memcpy(buf + 8, message.data(), len);
  while (write(fd, buf, 8 + len) < 0 && errno == EINTR) {
  }
}

namespace {

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  const int sig = WTERMSIG(status);
  const char* name = sigabbrev_np(sig);
  return "was killed by signal " + std::to_string(sig) +
         (name ? std::string(" (SIG") + name + ")" : std::string());
}

// True once the pipe's writer is gone (read() gives end-of-file).
bool ended(int fd) {
  char c;
  ssize_t n;
  while ((n = read(fd, &c, 1)) < 0 && errno == EINTR) {
  }
  return n == 0;
}

}  // namespace

SpawnSupervisor::SpawnSupervisor(int nprocs, int record_fd, double grace_seconds)
    : children_(nprocs), record_fd_(record_fd), grace_(grace_seconds) {}

SpawnSupervisor::~SpawnSupervisor() {
  for (Child& c : children_)
    for (int fd : c.life_fds)
      if (fd >= 0) close(fd);
  close(record_fd_);
}

void SpawnSupervisor::started(int rank, pid_t pid, std::array<int, 2> life_fds) {
  children_[rank] = Child{pid, life_fds, true};
}

void SpawnSupervisor::kill_all() {
  for (Child& c : children_) {
    if (!c.running) continue;
    kill(c.pid, SIGKILL);
    waitpid(c.pid, nullptr, 0);
    c.running = false;
  }
}

bool SpawnSupervisor::any_running() const {
  return std::any_of(children_.begin(), children_.end(), [](const Child& c) { return c.running; });
}

std::string SpawnSupervisor::who(int rank) const {
  return "rank " + std::to_string(rank) + " of " + std::to_string(children_.size());
}

void SpawnSupervisor::read_records() {
  char buf[4096];
  for (;;) {
    const ssize_t n = read(record_fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // nothing now (EAGAIN), or every writer is gone
    pending_.append(buf, static_cast<size_t>(n));
  }
  while (pending_.size() >= 8) {
    int32_t rank = 0;
    uint32_t len = 0;
    std::memcpy(&rank, pending_.data(), 4);
    std::memcpy(&len, pending_.data() + 4, 4);
    if (pending_.size() < 8 + len) break;
    records_.push_back({rank, 1, who(rank) + " raised: " + pending_.substr(8, len)});
    pending_.erase(0, 8 + len);
  }
}

void SpawnSupervisor::finish(Child& c, int status, std::vector<Failure>& failed, int rank) {
  c.running = false;
  for (int& fd : c.life_fds) {
    if (fd >= 0) close(fd);
    fd = -1;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  failed.push_back({rank, code, who(rank) + " " + describe_exit(status)});
}

// The ranks that exited since the last call, failing ones returned in rank order.
std::vector<SpawnSupervisor::Failure> SpawnSupervisor::collect_exits() {
  std::vector<Failure> failed;
  for (size_t r = 0; r < children_.size(); ++r) {
    Child& c = children_[r];
    if (!c.running) continue;
    int status = 0;
    if (std::any_of(c.life_fds.begin(), c.life_fds.end(), [](int fd) { return ended(fd); })) {
      // Its files are closed: it is exiting, and waitpid returns as soon as it is done.
      while (waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
      }
    } else if (waitpid(c.pid, &status, WNOHANG) != c.pid) {
      continue;
    }
    finish(c, status, failed, static_cast<int>(r));
  }
  return failed;
}

void SpawnSupervisor::decide(const std::vector<Failure>& exits) {
  if (failure_) return;
  for (const Failure& e : exits) {
    const bool raised = std::any_of(records_.begin(), records_.end(),
                                    [&](const Failure& f) { return f.rank == e.rank; });
    if (!raised) {
      failure_ = e;  // ended without raising, before any peer could notice: the first failure
      break;
    }
  }
  if (!failure_ && !records_.empty()) failure_ = records_.front();
  if (failure_) stop_others();
}

void SpawnSupervisor::stop_others() {
  for (const Child& c : children_)
    if (c.running) kill(c.pid, SIGTERM);
  kill_at_ = Clock::now() +
             std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(grace_));
}

void SpawnSupervisor::watch() {
  while (any_running()) {
    std::vector<pollfd> fds{{record_fd_, POLLIN, 0}};
    for (const Child& c : children_)
      if (c.running)
        for (int fd : c.life_fds) fds.push_back({fd, POLLIN, 0});
    poll(fds.data(), fds.size(), 100);
    read_records();
    const std::vector<Failure> exits = collect_exits();
    read_records();
    decide(exits);
    if (kill_at_ && Clock::now() >= *kill_at_) {
      for (const Child& c : children_)
        if (c.running) kill(c.pid, SIGKILL);
      kill_at_.reset();
    }
  }
  read_records();
  decide({});
  if (!failure_) return;
  const std::string rest = children_.size() > 1 ? "; the other ranks were stopped" : "";
  throw SpawnError(
      weft::detail::with_location(__FILE__, __LINE__, "spawn: " + failure_->what + rest),
      failure_->rank, failure_->exit_code);
}

}  // namespace weft::dist::detail
