// dist::spawn (weft/distributed/spawn.h): forks the ranks with torchrun's environment and the
// store's port held for rank 0 (Note [Store admission]), then hands them to SpawnSupervisor.
#include "weft/distributed/spawn.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <thread>

#include "distributed/spawn_supervisor.h"
#include "weft/ops.h"

namespace weft::dist {

namespace {

// The threads of this process (/proc/self/task holds one entry per thread), 0 if unknown.
int count_threads() {
  DIR* d = opendir("/proc/self/task");
  if (!d) return 0;
  int n = 0;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') ++n;
  closedir(d);
  return n;
}

// Hex of n random bytes (the job's run id and store token).
std::string random_hex(size_t n) {
  unsigned char b[16] = {};
  const int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  const bool ok = fd >= 0 && n <= sizeof b && read(fd, b, n) == static_cast<ssize_t>(n);
  if (fd >= 0) close(fd);
  WEFT_CHECK_DIST(ok, "spawn: cannot read /dev/urandom: ", std::strerror(errno));
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) s += {digits[b[i] >> 4], digits[b[i] & 15]};
  return s;
}

// A listening socket on a free loopback port, for rank 0's TCPStore (WEFT_STORE_LISTEN_FD):
// held from now on, so no other job can take the port before the store uses it.
std::pair<int, int> listen_on_free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  const bool ok = fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  listen(fd, SOMAXCONN) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  if (!ok) {
    const int e = errno;
    if (fd >= 0) close(fd);
    WEFT_DIST_ERROR("spawn: cannot listen on a free port of 127.0.0.1: ", std::strerror(e));
  }
  return {fd, ntohs(a.sin_port)};
}

// One rank, in the forked child: torchrun's environment, then fn; never returns.
// Moves `fd` to the highest free descriptor below min(RLIMIT_NOFILE, 4096), above any socket the
// rank will open (spawn_supervisor.cpp).
void move_high(int fd) {
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  for (int target = static_cast<int>(std::min<rlim_t>(lim.rlim_cur, 4096)) - 1; target > fd;
       --target) {
    if (fcntl(target, F_GETFD) == -1 && errno == EBADF) {
      if (dup3(fd, target, O_CLOEXEC) == target) close(fd);
      return;
    }
  }
}

// It closes nothing else it inherited: a descriptor freed below the low life pipe could be
// taken by a socket, which the kernel might then close before that pipe (spawn_supervisor.cpp).
[[noreturn]] void run_rank(const std::function<void(int)>& fn, int rank, int nprocs, int port,
                           int listen_fd, int record_fd, int high_life_fd,
                           const std::string& run_id, const std::string& token, pid_t parent) {
#ifdef __linux__
  prctl(PR_SET_PDEATHSIG, SIGKILL);  // the parent gone (even SIGKILLed): no orphaned rank
  if (getppid() != parent) _exit(1);
#else
  (void)parent;
#endif
  move_high(high_life_fd);
  const std::pair<const char*, std::string> env[] = {{"MASTER_ADDR", "127.0.0.1"},
                                                     {"MASTER_PORT", std::to_string(port)},
                                                     {"RANK", std::to_string(rank)},
                                                     {"WORLD_SIZE", std::to_string(nprocs)},
                                                     {"LOCAL_RANK", std::to_string(rank)},
                                                     {"LOCAL_WORLD_SIZE", std::to_string(nprocs)},
                                                     {"WEFT_RUN_ID", run_id},
                                                     {"WEFT_STORE_TOKEN", token}};
  for (const auto& [k, v] : env) setenv(k, v.c_str(), 1);
  if (rank == 0) setenv("WEFT_STORE_LISTEN_FD", std::to_string(listen_fd).c_str(), 1);
  // Not an MPI job, whatever launched the parent (init_process_group would pick MPI).
  for (const char* k : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) unsetenv(k);
  if (!std::getenv("OMP_NUM_THREADS")) {
    const int cpus = static_cast<int>(std::thread::hardware_concurrency());
    set_num_threads(std::max(1, cpus / nprocs));  // the ranks share the cores, as weft-run's
  }
  int code = 0;
  try {
    fn(rank);
  } catch (const std::exception& e) {
    detail::write_failure_record(record_fd, rank, e.what());
    code = 1;
  } catch (...) {
    detail::write_failure_record(record_fd, rank, "an exception not derived from std::exception");
    code = 1;
  }
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  _exit(code);  // not exit(): the parent's copied objects are the parent's to destroy
}

}  // namespace

void spawn(const std::function<void(int rank)>& fn, int nprocs, SpawnOptions options) {
  WEFT_CHECK_DIST(fn, "spawn: no function to run");
  WEFT_CHECK_DIST(nprocs >= 1, "spawn: nprocs must be at least 1, got ", nprocs);
  WEFT_CHECK_DIST(options.grace_seconds >= 0, "spawn: grace_seconds must be >= 0, got ",
                  options.grace_seconds);
  const int threads = count_threads();
  WEFT_CHECK_DIST(threads <= 1, "spawn: this process already runs ", threads,
                  " threads, and a forked rank would get only the calling one (OpenMP's pool, a "
                  "lock another thread holds: hangs). Call spawn before anything starts threads "
                  "(before the first tensor op, DataLoader or process group), or start the ranks "
                  "with weft-run");
  const std::string run_id = random_hex(8), token = random_hex(16);
  auto [listen_fd, port] = listen_on_free_port();
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    const int e = errno;
    close(listen_fd);
    WEFT_DIST_ERROR("spawn: cannot create a pipe: ", std::strerror(e));
  }
  fcntl(fds[0], F_SETFL, O_NONBLOCK);
  // Output buffered now would otherwise be written once by every child too.
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  detail::SpawnSupervisor supervisor(nprocs, fds[0], options.grace_seconds);  // owns fds[0]
  const pid_t parent = getpid();
  auto fail = [&](int rank, const char* what, int e) {
    supervisor.kill_all();
    close(listen_fd);
    close(fds[1]);
    WEFT_DIST_ERROR("spawn: ", what, " for rank ", rank, " failed: ", std::strerror(e));
  };
  for (int r = 0; r < nprocs; ++r) {
    // Two life pipes, whose write ends only the child holds: one at a low descriptor, one moved
    // to a high one (spawn_supervisor.cpp says why).
    int low[2] = {-1, -1}, high[2] = {-1, -1};
    if (pipe2(low, O_CLOEXEC) != 0 || pipe2(high, O_CLOEXEC) != 0) {
      const int e = errno;
      for (int fd : {low[0], low[1], high[0], high[1]})
        if (fd >= 0) close(fd);
      fail(r, "pipe", e);
    }
    const pid_t pid = fork();
    if (pid == 0) run_rank(fn, r, nprocs, port, listen_fd, fds[1], high[1], run_id, token, parent);
    const int e = errno;
    close(low[1]);  // the child's alone now: they end when the child does
    close(high[1]);
    fcntl(low[0], F_SETFL, O_NONBLOCK);
    fcntl(high[0], F_SETFL, O_NONBLOCK);
    if (pid < 0) {
      close(low[0]);
      close(high[0]);
      fail(r, "fork", e);
    }
    supervisor.started(r, pid, {low[0], high[0]});
  }
  close(listen_fd);  // rank 0 has its own copy
  close(fds[1]);
  supervisor.watch();  // throws SpawnError for the first failure
}

}  // namespace weft::dist
