// Internal to dist::spawn: watches the forked ranks until every one has exited, names the first
// failure and stops the others (SIGTERM, then SIGKILL after the grace period). Guarantee: the
// failure named is the one that came first, even when its peers fail right after it because
// their connections to it broke (see spawn_supervisor.cpp for how the order is known).
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace weft::dist::detail {

// A failing rank writes one record, [int32 rank][uint32 length][message], into the pipe all
// ranks share, in one write() of at most PIPE_BUF bytes (atomic: records never mix), before it
// exits.
void write_failure_record(int fd, int rank, const std::string& message);

class SpawnSupervisor {
 public:
  // record_fd: the shared pipe's read end, non-blocking; closed with the supervisor.
  SpawnSupervisor(int nprocs, int record_fd, double grace_seconds);
  ~SpawnSupervisor();
  SpawnSupervisor(const SpawnSupervisor&) = delete;
  SpawnSupervisor& operator=(const SpawnSupervisor&) = delete;

  // Rank `rank` runs as `pid`; life_fds are the read ends (non-blocking) of the two pipes only
  // that child holds open, which reach end-of-file when it exits.
  void started(int rank, pid_t pid, std::array<int, 2> life_fds);
  // Kills and reaps every rank started so far (spawn failed half way).
  void kill_all();
  // Returns once every rank has exited; then throws SpawnError for the first failure, if any.
  void watch();

 private:
  struct Child {
    pid_t pid = -1;
    std::array<int, 2> life_fds = {-1, -1};
    bool running = false;
  };
  struct Failure {
    int rank, exit_code;
    std::string what;
  };
  using Clock = std::chrono::steady_clock;
  void read_records();
  std::vector<Failure> collect_exits();
  void decide(const std::vector<Failure>& exits);
  void stop_others();
  void finish(Child& c, int status, std::vector<Failure>& failed, int rank);
  bool any_running() const;
  std::string who(int rank) const;

  std::vector<Child> children_;
  int record_fd_;
  double grace_;
  std::string pending_;           // bytes read but not yet a whole record
  std::vector<Failure> records_;  // in the order the ranks wrote them
  std::optional<Failure> failure_;
  std::optional<Clock::time_point> kill_at_;
};

}  // namespace weft::dist::detail
