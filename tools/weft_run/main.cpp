// weft-run: a torchrun-compatible launcher. Starts --nproc-per-node copies of PROGRAM with the
// env:// rendezvous variables set, prefixes every output line with "[rankR]: ", and when one
// rank fails stops the others (SIGTERM, then SIGKILL after a grace period) and exits with that
// rank's status, after up to --max-restarts restarts of the group. Standard library and POSIX
// only; one thread, one poll() loop (group.h), so output lines can never interleave.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <optional>
#include <string>

#include "group.h"
#include "options.h"
#include "report.h"
#include "store_port.h"

using namespace weft_run;

namespace {

// Signals reach the poll loop through a self-pipe: the handler only write()s the number.
int g_sig_pipe[2] = {-1, -1};

void on_signal(int sig) {
  int saved = errno;
  unsigned char b = static_cast<unsigned char>(sig);
  [[maybe_unused]] ssize_t r = write(g_sig_pipe[1], &b, 1);
  errno = saved;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse_args(argc, argv);
  choose_job_identity(o);
  if (o.node_rank == 0) o.store_fd = hold_store_port(o);
  // Rank 0 binds the port itself: it was free a moment ago, and is free again now.
  if (o.store_fd >= 0 && !o.store_handoff) {
    close(o.store_fd);
    o.store_fd = -1;
  }

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
    Group g(o, restart, g_sig_pipe[0]);
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
