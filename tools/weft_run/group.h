// One node's group of ranks under weft-run: each rank is PROGRAM in its own process group with
// torchrun's environment, its stdout and stderr read through pipes and re-emitted whole line by
// whole line ("[rankR]: " prefixed), all from one thread and one poll() loop, so output lines
// never interleave. When a rank fails the others get SIGTERM, then SIGKILL after the grace
// period; signals to weft-run arrive through a self-pipe and are forwarded to every rank.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "options.h"

namespace weft_run {

// One child stream (stdout or stderr) read through a pipe and re-emitted line by line.
struct Stream {
  int fd = -1;
  int out_fd = 1;  // where its lines go
  std::string buf;
  bool redraw = false;  // '\r' also ends a piece (rank 0's stdout on a terminal)
};

struct Rank {
  int local = 0, global = 0;
  pid_t pid = -1;
  bool running = false;
  Stream out, err;
};

class Group {
 public:
  // signal_fd: the read end of the self-pipe the signal handler writes signal numbers into.
  Group(const Options& o, int restart, int signal_fd)
      : o_(o), restart_(restart), signal_fd_(signal_fd) {}

  // Runs the local group to completion. Returns the wait status of the first rank that
  // failed, or nullopt when all exited 0 (or were stopped by a forwarded signal).
  std::optional<int> run();
  int interrupted() const { return interrupted_; }
  const std::string& failure_description() const { return failure_desc_; }

 private:
  using Clock = std::chrono::steady_clock;
  std::vector<std::pair<std::string, std::string>> child_env(const Rank& r) const;
  void spawn(Rank& r);
  void on_readable(Rank& r, Stream& s);
  void flush(Rank& r, Stream& s, bool final);
  void on_signals();
  void reap();
  void signal_all(int sig);
  void begin_stop();
  std::string describe(const Rank& r, int status) const;

  const Options& o_;
  const bool stdout_tty_ = isatty(1) == 1;
  int restart_;
  int signal_fd_;
  std::vector<Rank> ranks_;
  std::optional<int> failure_;
  std::string failure_desc_;
  int interrupted_ = 0;
  bool stopping_ = false, killed_ = false;
  Clock::time_point kill_at_;
};

}  // namespace weft_run
