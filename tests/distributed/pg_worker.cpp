// weft_pg_worker: one rank of a multi-process test of weft::dist (tests/test_process_group.cpp
// starts several, with env:// variables, or under mpirun). argv[1] picks the scenario; the
// process prints "OK ..." / "DISTERROR: ..." lines and exits 0 when the scenario behaved as
// expected, non-zero otherwise (with "FAIL: ..." saying why).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "free_collectives.h"
#include "weft/distributed/distributed.h"
#include "weft/tensor.h"
#include "worker_check.h"

using namespace weft;
using namespace weft::dist;
using Clock = std::chrono::steady_clock;

namespace {

using weft::test::fail;
using weft::test::g_rank;

std::string env_or(const char* name, const std::string& def) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : def;
}

Duration timeout_from_env() {
  return Duration(std::stoll(env_or("WEFT_TEST_TIMEOUT_MS", "20000")));
}

InitOptions options() {
  InitOptions o;
  o.backend = env_or("WEFT_TEST_BACKEND", "");
  o.init_method = env_or("WEFT_TEST_INIT", "env://");
  o.timeout = timeout_from_env();
  return o;
}

// A rank- and index-dependent value, so every expectation below is computed from the formula.
float f(int r, int64_t i) { return static_cast<float>((r * 7 + i * 3) % 11) - 5.0f + 0.25f * r; }

Tensor make_f(int r, int64_t n, int64_t offset = 0) {
  Tensor t = make_empty({n}, kFloat32);
  float* p = t.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) p[i] = f(r, i + offset);
  return t;
}

void expect_close(const Tensor& t, const std::function<double(int64_t)>& want,
                  const std::string& what) {
  auto v = t.contiguous().to_vector_float();
  for (size_t i = 0; i < v.size(); ++i) {
    const double w = want(static_cast<int64_t>(i));
    if (std::abs(v[i] - w) > 1e-4 * (1 + std::abs(w))) {
      fail(what + ": element " + std::to_string(i) + " is " + std::to_string(v[i]) + ", want " +
           std::to_string(w));
    }
  }
}

template <typename F>
std::string expect_dist_error(F&& fn, const std::string& what) {
  try {
    fn();
  } catch (const DistError& e) {
    return e.what();
  } catch (const std::exception& e) {
    fail(what + ": threw a non-DistError: " + e.what());
  }
  fail(what + ": did not throw");
}

void collectives() {
  init_process_group(options());
  auto pg = default_group();
  const int r = pg->rank(), n = pg->size();
  g_rank = r;
  EXPECT(get_rank() == r && get_world_size() == n, "");
  const int64_t len = 37;

  // allreduce, each op: closed forms over all ranks' f(r', i).
  for (ReduceOp op :
       {ReduceOp::SUM, ReduceOp::AVG, ReduceOp::MAX, ReduceOp::MIN, ReduceOp::PRODUCT}) {
    Tensor t = make_f(r, len);
    pg->allreduce({t}, op)->wait();
    expect_close(
        t,
        [&](int64_t i) {
          double s = 0, mx = -1e30, mn = 1e30, prod = 1;
          for (int q = 0; q < n; ++q) {
            s += f(q, i);
            mx = std::max<double>(mx, f(q, i));
            mn = std::min<double>(mn, f(q, i));
            prod *= f(q, i);
          }
          return op == ReduceOp::SUM   ? s
                 : op == ReduceOp::AVG ? s / n
                 : op == ReduceOp::MAX ? mx
                 : op == ReduceOp::MIN ? mn
                                       : prod;
        },
        std::string("allreduce ") + std::to_string(static_cast<int>(op)));
  }

  // int64: exact beyond float precision.
  {
    Tensor t = make_empty({3}, kInt64);
    int64_t* p = t.data_ptr<int64_t>();
    for (int i = 0; i < 3; ++i) p[i] = (int64_t{1} << 40) + r * 1000 + i;
    Tensor m = t.clone();
    pg->allreduce({t})->wait();
    pg->allreduce({m}, ReduceOp::MAX)->wait();
    auto v = t.to_vector_int64(), mv = m.to_vector_int64();
    for (int i = 0; i < 3; ++i) {
      EXPECT(v[i] == n * ((int64_t{1} << 40) + i) + 1000LL * n * (n - 1) / 2, "int64 sum ", v[i]);
      EXPECT(mv[i] == (int64_t{1} << 40) + (n - 1) * 1000 + i, "int64 max ", mv[i]);
    }
  }

  // allreduce_into (Note [All-reduce into a separate output]): allreduce's bits, in the output,
  // from an ordinary tensor and from a view into a symmetric one (folded straight into the output
  // on one host); outputs that overlap the input or do not match it are refused.
  {
    Tensor sym = pg->empty_symmetric({3 * len + 5});
    for (int variant : {0, 1})
      for (ReduceOp op : {ReduceOp::SUM, ReduceOp::AVG, ReduceOp::MAX}) {
        Tensor in = variant ? sym.narrow(0, 5, len) : make_empty({len});
        in.copy_(make_f(r, len));
        Tensor want = make_f(r, len), out = make_empty({len});
        pg->allreduce({want}, op)->wait();
        pg->allreduce_into(out, in, op)->wait();
        EXPECT(std::memcmp(out.raw_data(), want.raw_data(), len * sizeof(float)) == 0,
               "allreduce_into (", variant ? "symmetric" : "ordinary", " input, op ",
               static_cast<int>(op), ") differs from allreduce");
      }
    const std::string overlap = expect_dist_error(
        [&] { pg->allreduce_into(sym.narrow(0, 0, len), sym.narrow(0, 3, len)); }, "overlap");
    EXPECT(overlap.find("overlap") != std::string::npos, "allreduce_into overlap: ", overlap);
    const std::string size = expect_dist_error(
        [&] { pg->allreduce_into(make_empty({len + 1}), make_f(r, len)); }, "size");
    EXPECT(size.find("does not match") != std::string::npos, "allreduce_into size: ", size);
  }

  // broadcast from root 1 (0 in a group of one); a list of two tensors of both dtypes.
  {
    const int root = n > 1 ? 1 : 0;
    Tensor t = make_f(r, len);
    Tensor k = make_empty({2}, kInt64);
    k.fill_(r * 10);
    pg->broadcast({t, k}, root)->wait();
    expect_close(
        t, [&](int64_t i) { return f(root, i); }, "broadcast");
    EXPECT(k.to_vector_int64()[1] == root * 10, "broadcast int64");
  }

  // allgather of a 2x3 tensor.
  {
    Tensor in = make_f(r, 6).view({2, 3});
    std::vector<Tensor> outs;
    for (int q = 0; q < n; ++q) outs.push_back(make_empty({2, 3}, kFloat32));
    pg->allgather(outs, in)->wait();
    for (int q = 0; q < n; ++q) {
      expect_close(
          outs[q], [&](int64_t i) { return f(q, i); }, "allgather " + std::to_string(q));
    }
  }

  // reduce_scatter: inputs[j] = f(r, i + 100 j); this rank gets the reduction of block r.
  for (ReduceOp op : {ReduceOp::SUM, ReduceOp::AVG, ReduceOp::MAX}) {
    std::vector<Tensor> ins;
    for (int j = 0; j < n; ++j) ins.push_back(make_f(r, 5, 100 * j));
    Tensor out = make_empty({5}, kFloat32);
    pg->reduce_scatter(out, ins, op)->wait();
    expect_close(
        out,
        [&](int64_t i) {
          double s = 0, mx = -1e30;
          for (int q = 0; q < n; ++q) {
            s += f(q, i + 100 * r);
            mx = std::max<double>(mx, f(q, i + 100 * r));
          }
          return op == ReduceOp::SUM ? s : op == ReduceOp::AVG ? s / n : mx;
        },
        "reduce_scatter");
  }

  pg->barrier()->wait();

  // Async: several ops in flight, waited in order; a large one spans many Gloo segments.
  {
    std::vector<Tensor> ts;
    std::vector<std::shared_ptr<Work>> ws;
    for (int k = 0; k < 6; ++k) {
      ts.push_back(make_f(r, k == 3 ? 300000 : 50 + k, k));
      ws.push_back(pg->allreduce({ts.back()}));
    }
    Tensor b = make_f(r, 9);
    ws.push_back(pg->broadcast({b}, n - 1));
    ws.push_back(pg->barrier());
    for (auto& w : ws) w->wait();
    for (auto& w : ws) EXPECT(w->is_completed(), "async completed");
    for (int k = 0; k < 6; ++k) {
      expect_close(
          ts[k],
          [&](int64_t i) {
            double s = 0;
            for (int q = 0; q < n; ++q) s += f(q, i + k);
            return s;
          },
          "async allreduce " + std::to_string(k));
    }
    expect_close(
        b, [&](int64_t i) { return f(n - 1, i); }, "async broadcast");
  }

  // then(): runs on the communication thread, before wait() returns; inline once completed.
  // Rank 0 joins late, so on the other ranks the op is surely pending when then() is called.
  {
    std::atomic<int> calls{0};
    std::atomic<bool> other_thread{false};
    const auto main_id = std::this_thread::get_id();
    Tensor t = make_f(r, 1000);
    if (r == 0 && n > 1) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto w = pg->allreduce({t});
    w->then([&](std::exception_ptr e) {
      if (!e) calls++;
      other_thread = std::this_thread::get_id() != main_id;
    });
    w->wait();
    EXPECT(calls == 1, "then() ran ", calls.load(), " times before wait() returned");
    if (r != 0) EXPECT(other_thread, "then() ran on the caller's thread");
    w->then([&](std::exception_ptr) { calls++; });
    EXPECT(calls == 2, "then() after completion did not run at once");
  }

  // Local sanity checks throw at the call, naming the problem.
  {
    Tensor nc = make_f(r, 6).view({2, 3}).transpose(0, 1);
    std::string m = expect_dist_error([&] { pg->allreduce({nc}); }, "non-contiguous");
    EXPECT(m.find("not contiguous") != std::string::npos, m);
    m = expect_dist_error([&] { pg->allgather({make_f(r, 3)}, make_f(r, 3)); }, "allgather count");
    if (n != 1) EXPECT(m.find("output tensors") != std::string::npos, m);
    m = expect_dist_error([&] { pg->broadcast({make_f(r, 3)}, n); }, "bad root");
  }

  // Subgroup of the first and last rank; the others get nullptr. The default group still works.
  if (n >= 2) {
    auto sub = new_group({n - 1, 0});
    if (r == 0 || r == n - 1) {
      EXPECT(sub && sub->size() == 2 && sub->rank() == (r == 0 ? 0 : 1), "subgroup shape");
      Tensor t = make_empty({4}, kFloat32);
      t.fill_(r + 1);
      sub->allreduce({t})->wait();
      expect_close(
          t, [&](int64_t) { return 1 + n; }, "subgroup allreduce");
      sub->barrier()->wait();
    } else {
      EXPECT(!sub, "non-member got a group");
    }
    Tensor t = make_f(r, 8);
    pg->allreduce({t})->wait();
    expect_close(
        t,
        [&](int64_t i) {
          double s = 0;
          for (int q = 0; q < n; ++q) s += f(q, i);
          return s;
        },
        "allreduce after new_group");
  }

  std::printf("OK rank=%d size=%d backend=%s\n", r, n, pg->backend_name().c_str());
  pg.reset();
  destroy_process_group();
}

// Rank n-1 leaves (exit or SIGKILL) after a barrier; the others' next collective must fail
// within the timeout with a DistError naming the connection/peer.
void peer_dies(bool kill9) {
  init_process_group(options());
  auto pg = default_group();
  const int r = pg->rank(), n = pg->size();
  g_rank = r;
  pg->barrier()->wait();
  if (r == n - 1) {
    std::fflush(stdout);
    if (kill9) kill(getpid(), SIGKILL);
    std::_Exit(3);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  Tensor t = make_f(r, 1000);
  const auto t0 = Clock::now();
  std::string m = expect_dist_error([&] { pg->allreduce({t})->wait(); }, "allreduce after death");
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  std::printf("DISTERROR: %s\nELAPSED_MS: %lld\n", m.c_str(), static_cast<long long>(ms));
  // The group is broken now: later ops fail with the first error (the timeout is far away, so
  // failing at all is failing fast).
  expect_dist_error([&] { pg->barrier()->wait(); }, "barrier after failure");
  std::printf("OK rank=%d\n", r);
  std::fflush(stdout);
  std::_Exit(0);  // skip destructors: a peer is gone, nothing to tidy
}

// Rank n-1 never calls the collective; the others get DistError after their timeout.
void peer_stalls() {
  const Duration timeout = timeout_from_env();
  init_process_group(options());
  auto pg = default_group();
  const int r = pg->rank(), n = pg->size();
  g_rank = r;
  pg->barrier()->wait();
  if (r == n - 1) {
    // Long enough that the others time out first even on a slow machine; then it just leaves.
    std::this_thread::sleep_for(3 * timeout + std::chrono::milliseconds(500));
    std::printf("OK rank=%d (stalled)\n", r);
    std::fflush(stdout);
    std::_Exit(0);
  }
  Tensor t = make_f(r, 100);
  const auto t0 = Clock::now();
  auto w = pg->allreduce({t});
  std::string m = expect_dist_error([&] { w->wait(Duration(300)); }, "short wait");
  EXPECT(m.find("timed out after 300 ms") != std::string::npos, m);
  m = expect_dist_error([&] { w->wait(); }, "wait with the group timeout");
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  std::printf("DISTERROR: %s\nELAPSED_MS: %lld\nOK rank=%d\n", m.c_str(),
              static_cast<long long>(ms), r);
  std::fflush(stdout);
  std::_Exit(0);
}

// Just init (for bad rendezvous settings): prints DISTERROR and exits 2 if it throws.
void init_only() {
  const auto t0 = Clock::now();
  try {
    init_process_group(options());
  } catch (const DistError& e) {
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
    std::printf("DISTERROR: %s\nELAPSED_MS: %lld\n", e.what(), static_cast<long long>(ms));
    std::fflush(stdout);
    std::_Exit(2);
  }
  std::printf("OK rank=%d\n", get_rank());
  default_group()->barrier()->wait();
  destroy_process_group();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string scenario = argc > 1 ? argv[1] : "";
  try {
    if (scenario == "collectives") {
      collectives();
    } else if (scenario == "die") {
      peer_dies(false);
    } else if (scenario == "kill9") {
      peer_dies(true);
    } else if (scenario == "stall") {
      peer_stalls();
    } else if (scenario == "init") {
      init_only();
    } else if (scenario == "free_collectives") {
      weft::test::free_collectives(options());
    } else {
      fail("unknown scenario '" + scenario + "'");
    }
  } catch (const std::exception& e) {
    fail(std::string("exception: ") + e.what());
  }
  std::fflush(stdout);
  return 0;
}
