// dist::spawn: torch.multiprocessing.spawn for C++, where the program starts its own ranks.
// spawn(fn, nprocs) forks nprocs processes that run fn(rank) with torchrun's environment (RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so that init_process_group() inside fn joins
// them on a free loopback port that spawn holds for rank 0's store (as weft-run does).
// Guarantees: spawn returns once every rank has returned from fn; when one fails, the other ranks
// are stopped (SIGTERM, then SIGKILL after the grace period) and spawn throws SpawnError naming the
// first failure: that rank's exception message, or its exit code or signal.
#pragma once

#include <functional>
#include <string>

#include "weft/error.h"

namespace weft::dist {

struct SpawnOptions {
  double grace_seconds = 5.0;  // between SIGTERM and SIGKILL for the ranks left after a failure
};

// The first failing rank of a spawn, its message (for an exception, what() of it) and the exit
// status the process reported: 1 for an exception, the code for exit(code), 128 + signal for a
// signal, as a shell reports it; `return e.exit_code();` from main passes it on.
class SpawnError : public DistError {
 public:
  SpawnError(const std::string& what, int rank, int exit_code)
      : DistError(what), rank_(rank), exit_code_(exit_code) {}
  int rank() const { return rank_; }
  int exit_code() const { return exit_code_; }

 private:
  int rank_, exit_code_;
};

// Runs fn(rank) for rank 0..nprocs-1, each in a child process forked from this one, so fn sees
// everything the program set up (its captures, argv, globals). fork copies only the calling
// thread, so spawn must run before the process starts any (OpenMP's pool starts with the first
// tensor op, DataLoader workers, a process group): it checks, and throws naming the count
// otherwise. A child that returns from fn exits 0; output goes straight to this process's stdout
// and stderr. Do not set MASTER_ADDR/MASTER_PORT inside fn: the store's port is spawn's.
void spawn(const std::function<void(int rank)>& fn, int nprocs, SpawnOptions options = {});

}  // namespace weft::dist
