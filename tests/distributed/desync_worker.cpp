// One rank of the desync and fingerprint tests (tests/test_desync.cpp, under weft-run): ranks
// that stall, die or issue mismatched collectives, and correct programs under
// WEFT_DISTRIBUTED_DEBUG=DETAIL. Lines start "rank R: "; a rank whose collective fails prints
// "rank R: DISTERROR: <message>". The collectives' timeout is left at init_process_group's
// default, so that weft-run --collective-timeout (WEFT_COLLECTIVE_TIMEOUT) sets it.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "weft/distributed/distributed.h"
#include "weft/distributed/error_file.h"
#include "weft/tensor.h"
#include "worker_check.h"

using namespace weft;
using namespace weft::dist;
using weft::test::fail;
using weft::test::g_rank;

namespace {

Tensor filled(Shape shape, float v) {
  Tensor t = make_empty(shape, kFloat32);
  t.fill_(v);
  return t;
}

void expect_all(const Tensor& t, double want, const std::string& what) {
  for (float v : t.contiguous().to_vector_float())
    EXPECT(std::abs(v - want) < 1e-4 * (1 + std::abs(want)), what, ": got ", v, ", want ", want);
}

// Collective #k of a checked sequence: allreduce, broadcast, allgather and barrier in turn.
void checked_collective(ProcessGroup& pg, int k) {
  const int n = pg.size(), r = pg.rank();
  switch (k % 4) {
    case 0: {
      Tensor t = filled({8}, r + 1.0f);
      pg.allreduce({t})->wait();
      expect_all(t, n * (n + 1) / 2.0, "allreduce #" + std::to_string(k));
      break;
    }
    case 1: {
      const int root = k % n;
      Tensor t = filled({3, 2}, r * 10.0f);
      pg.broadcast({t}, root)->wait();
      expect_all(t, root * 10.0, "broadcast #" + std::to_string(k));
      break;
    }
    case 2: {
      std::vector<Tensor> outs;
      for (int q = 0; q < n; ++q) outs.push_back(make_empty({4}, kFloat32));
      pg.allgather(outs, filled({4}, (float)r))->wait();
      for (int q = 0; q < n; ++q) expect_all(outs[q], q, "allgather #" + std::to_string(k));
      break;
    }
    default:
      pg.barrier()->wait();
  }
}

// A rank whose collective failed: prints the error (and records it, as a program's top-level
// handler does for weft-run), then exits 1 without tidying up (its peers are gone or stuck).
[[noreturn]] void failed(const DistError& e) {
  std::printf("rank %d: DISTERROR: %s\n", g_rank, e.what());
  std::fflush(stdout);
  record_error(e);
  std::_Exit(1);
}

// Rank `who` stops before collective #n (forever: weft-run stops it once a survivor fails);
// the others time out in it and name `who`.
void stall_or_die(int who, int n, bool die) {
  auto pg = default_group();
  for (int k = 1; k < n; ++k) checked_collective(*pg, k);
  if (g_rank == who) {
    std::printf("rank %d: %s before collective #%d\n", g_rank, die ? "dying" : "stalling", n);
    std::fflush(stdout);
    if (die) kill(getpid(), SIGKILL);
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  }
  try {
    Tensor t = filled({250, 4}, 1.0f);
    pg->allreduce({t})->wait();
  } catch (const DistError& e) {
    failed(e);
  }
  fail("collective #" + std::to_string(n) + " completed without rank " + std::to_string(who));
}

// DETAIL: collective #2 differs on rank 1 (shape or op). Every rank must refuse it with the same
// message, none may hang, and the group must stay usable (the refused call never ran).
void mismatch(const std::string& what) {
  auto pg = default_group();
  checked_collective(*pg, 0);
  Tensor t = filled({g_rank == 1 && what == "shape" ? 5 : 4, 3}, 1.0f);
  try {
    if (g_rank == 1 && what == "op")
      pg->broadcast({t}, 0)->wait();
    else
      pg->allreduce({t})->wait();
    fail("the mismatched collective ran");
  } catch (const DistError& e) {
    std::printf("rank %d: DISTERROR: %s\n", g_rank, e.what());
  }
  checked_collective(*pg, 0);
  std::printf("rank %d: OK group usable after the mismatch\n", g_rank);
}

// DETAIL on a correct program: every kind of collective, async ones in flight, a subgroup.
void detail_ok() {
  auto pg = default_group();
  const int n = pg->size(), r = pg->rank();
  for (int k = 0; k < 8; ++k) checked_collective(*pg, k);
  Tensor avg = filled({5}, (float)r), mx = make_empty({2}, kInt64);
  mx.fill_(r);
  pg->allreduce({avg}, ReduceOp::AVG)->wait();
  pg->allreduce({mx}, ReduceOp::MAX)->wait();
  expect_all(avg, (n - 1) / 2.0, "allreduce AVG");
  EXPECT(mx.to_vector_int64()[1] == n - 1, "allreduce MAX int64");
  std::vector<Tensor> ins;
  for (int j = 0; j < n; ++j) ins.push_back(filled({3}, (float)(r + j)));
  Tensor out = make_empty({3}, kFloat32);
  pg->reduce_scatter(out, ins)->wait();
  expect_all(out, n * (n - 1) / 2.0 + n * r, "reduce_scatter");
  std::vector<Tensor> ts;
  std::vector<std::shared_ptr<Work>> ws;
  for (int k = 0; k < 4; ++k) {
    ts.push_back(filled({10 + k}, 1.0f));
    ws.push_back(pg->allreduce({ts.back()}));
  }
  for (auto& w : ws) w->wait();
  for (auto& t : ts) expect_all(t, n, "async allreduce");
  auto sub = new_group({0, n - 1});
  if (sub) {
    Tensor s = filled({4}, 1.0f);
    sub->allreduce({s})->wait();
    expect_all(s, sub->size(), "subgroup allreduce");
  }
  std::printf("rank %d: OK detail collectives\n", g_rank);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    InitOptions init;
    if (mode == "timeout" && argc > 2) init.timeout = Duration(std::atoll(argv[2]));
    init_process_group(init);
    g_rank = get_rank();
    if (mode == "stall" || mode == "die") {
      stall_or_die(argc > 2 ? std::atoi(argv[2]) : 1, argc > 3 ? std::atoi(argv[3]) : 3,
                   mode == "die");
    } else if (mode == "mismatch") {
      mismatch(argc > 2 ? argv[2] : "shape");
    } else if (mode == "detail_ok") {
      detail_ok();
    } else if (mode == "timeout") {
      std::printf("rank %d: timeout_ms=%lld\n", g_rank,
                  static_cast<long long>(default_group()->timeout().count()));
    } else {
      fail("unknown mode '" + mode + "'");
    }
    std::fflush(stdout);
    destroy_process_group();
  } catch (const DistError& e) {
    std::printf("rank %d: DISTERROR: %s\n", g_rank, e.what());
    std::fflush(stdout);
    return 2;
  }
  return 0;
}
