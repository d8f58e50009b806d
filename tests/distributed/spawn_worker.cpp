// spawn_worker: a program that starts its own ranks with dist::spawn (tests/test_spawn.cpp runs
// it). argv[1] picks the scenario, argv[2] the number of ranks. Ranks print "RANK r ..." lines;
// the parent prints "SPAWNERROR rank=R code=C: <what>" and exits with C when spawn throws
// SpawnError, or "DISTERROR: <what>" (exit 2) for another DistError, or "SPAWN OK" (exit 0).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>
#include <thread>

#include "weft/distributed/distributed.h"
#include "weft/distributed/spawn.h"

using namespace weft;

namespace {

Tensor filled(double v) {
  Tensor t = make_empty({4}, kFloat32);
  t.fill_(v);
  return t;
}

// Every rank joins through spawn's environment and all-reduces rank + 1.
void join_and_sum(int rank) {
  dist::init_process_group({.backend = "gloo"});
  Tensor t = filled(rank + 1);
  dist::all_reduce(t);
  const int n = dist::get_world_size();
  std::printf("RANK %d of %d env RANK=%s LOCAL_RANK=%s WORLD_SIZE=%s sum=%g want=%d pid=%d\n", rank,
              n, std::getenv("RANK"), std::getenv("LOCAL_RANK"), std::getenv("WORLD_SIZE"),
              t.to_vector_float()[0], n * (n + 1) / 2, static_cast<int>(getpid()));
  dist::destroy_process_group();
}

// The ranks other than 1 wait where only a signal ends them (pause()); rank 1 fails `how`.
void one_fails(int rank, const std::string& how) {
  if (rank != 1) {
    std::printf("RANK %d waits\n", rank);
    std::fflush(stdout);
    for (;;) pause();
  }
  if (how == "raise") throw std::runtime_error("boom from rank 1");
  if (how == "exit") std::exit(3);
  if (how == "abort") std::abort();
}

// Rank 1 fails (`how`: exits, raises, aborts) between two barriers: its peers then fail too, on
// the broken connection, but the failure spawn names is rank 1's, the first.
void fails_in_collective(int rank, const std::string& how) {
  dist::init_process_group({.backend = "gloo", .timeout = std::chrono::minutes(10)});
  dist::barrier();
  if (rank == 1) {
    if (how == "exit") std::_Exit(3);
    if (how == "abort") std::abort();
    throw std::runtime_error("boom between collectives");
  }
  dist::barrier();
  std::printf("RANK %d passed a barrier without rank 1\n", rank);
}

// spawn while another thread runs: refused, naming the thread count.
void spawn_beside_a_thread(int nprocs) {
  std::promise<void> go;
  std::thread t([f = go.get_future()]() mutable { f.wait(); });
  try {
    dist::spawn(join_and_sum, nprocs);
  } catch (...) {
    go.set_value();
    t.join();
    throw;
  }
  go.set_value();
  t.join();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string scenario = argc > 1 ? argv[1] : "";
  const int nprocs = argc > 2 ? std::atoi(argv[2]) : 2;
  try {
    if (scenario == "sum") {
      dist::spawn(join_and_sum, nprocs);
    } else if (scenario == "raise" || scenario == "exit" || scenario == "abort") {
      dist::spawn([&](int rank) { one_fails(rank, scenario); }, nprocs, {.grace_seconds = 1});
    } else if (scenario.rfind("in_collective_", 0) == 0) {
      const std::string how = scenario.substr(14);
      dist::spawn([&](int rank) { fails_in_collective(rank, how); }, nprocs);
    } else if (scenario == "after_threads") {
      spawn_beside_a_thread(nprocs);
    } else {
      std::printf("unknown scenario '%s'\n", scenario.c_str());
      return 64;
    }
  } catch (const dist::SpawnError& e) {
    std::printf("SPAWNERROR rank=%d code=%d: %s\n", e.rank(), e.exit_code(), e.what());
    return e.exit_code();
  } catch (const DistError& e) {
    std::printf("DISTERROR: %s\n", e.what());
    return 2;
  }
  std::printf("SPAWN OK\n");
  return 0;
}
