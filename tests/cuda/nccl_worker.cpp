// nccl_worker: one rank of the multi-process NCCL tests (tests/cuda/test_cuda_nccl.cpp starts
// them under weft-run, one GPU per rank by LOCAL_RANK). argv[1] picks the scenario; the process
// prints "OK <scenario>" and exits 0 when every check passed, or "FAIL: ..." and exits 1.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "distributed/worker_check.h"
#include "weft/cuda.h"
#include "weft/distributed/distributed.h"
#include "weft/distributed/nccl/process_group_nccl.h"
#include "weft/ops.h"
using namespace weft;
using namespace weft::dist;

namespace {

using weft::test::fail;
using weft::test::g_rank;

// A rank- and index-dependent value, so every expectation is computed from the formula.
float f(int r, int64_t i) { return static_cast<float>((r * 7 + i * 3) % 11) - 5.0f + 0.25f * r; }

Tensor make_f(int r, int64_t n, Device d) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = f(r, i);
  return tensor(v, {n}).to(d);
}

void expect_close(const Tensor& t, const std::function<double(int64_t)>& want,
                  const std::string& what) {
  EXPECT(t.device().is_cuda(), what, " is on ", t.device());
  auto v = t.to_vector_float();
  for (size_t i = 0; i < v.size(); ++i) {
    const double w = want((int64_t)i);
    if (std::abs(v[i] - w) > 1e-3 * (1 + std::abs(w)))
      fail(what + ": element " + std::to_string(i) + " is " + std::to_string(v[i]) + ", want " +
           std::to_string(w));
  }
}

void collectives(int rank, int world, Device dev) {
  auto pg = default_group();
  EXPECT(pg->backend_name() == "nccl", "backend ", pg->backend_name());
  const int64_t n = 1000;
  auto sum_f = [&](int64_t i) {
    double s = 0;
    for (int r = 0; r < world; ++r) s += f(r, i);
    return s;
  };
  Tensor a = make_f(rank, n, dev);
  pg->allreduce({a})->wait();  // the stream waits; reading it below is ordered after
  expect_close(a, sum_f, "allreduce SUM");
  Tensor b = make_f(rank, n, dev);
  pg->allreduce({b}, ReduceOp::AVG)->wait(std::chrono::seconds(60));  // host-blocking form
  expect_close(
      b, [&](int64_t i) { return sum_f(i) / world; }, "allreduce AVG");
  Tensor mx = make_f(rank, n, dev), mn = make_f(rank, n, dev);
  pg->allreduce({mx}, ReduceOp::MAX)->wait();
  pg->allreduce({mn}, ReduceOp::MIN)->wait();
  expect_close(
      mx,
      [&](int64_t i) {
        double m = -1e30;
        for (int r = 0; r < world; ++r) m = std::max(m, (double)f(r, i));
        return m;
      },
      "allreduce MAX");
  expect_close(
      mn,
      [&](int64_t i) {
        double m = 1e30;
        for (int r = 0; r < world; ++r) m = std::min(m, (double)f(r, i));
        return m;
      },
      "allreduce MIN");
  // Several tensors in one group call, int64 and half types.
  Tensor i64 = full({5}, rank + 1, {.dtype = kInt64, .device = dev});
  Tensor h16 = full({8}, 0.5 * (rank + 1), {.device = dev}).to(DType::Float16);
  Tensor b16 = full({8}, rank + 1, {.device = dev}).to(DType::BFloat16);
  pg->allreduce({i64, h16, b16})->wait();
  const double tri = world * (world + 1) / 2.0;
  EXPECT(i64.to_vector_int64() == std::vector<int64_t>(5, (int64_t)tri), "int64 allreduce");
  expect_close(
      h16.to(kFloat32), [&](int64_t) { return 0.5 * tri; }, "fp16 allreduce");
  expect_close(
      b16.to(kFloat32), [&](int64_t) { return tri; }, "bf16 allreduce");
  // Broadcast from the last rank.
  Tensor bc = make_f(rank, n, dev);
  pg->broadcast({bc}, world - 1)->wait();
  expect_close(
      bc, [&](int64_t i) { return f(world - 1, i); }, "broadcast");
  // Allgather into separate outputs; reduce_scatter from separate inputs.
  std::vector<Tensor> outs;
  for (int r = 0; r < world; ++r) outs.push_back(zeros({n}, {.device = dev}));
  pg->allgather(outs, make_f(rank, n, dev))->wait();
  for (int r = 0; r < world; ++r)
    expect_close(
        outs[r], [&](int64_t i) { return f(r, i); }, "allgather " + std::to_string(r));
  std::vector<Tensor> ins;
  for (int r = 0; r < world; ++r) ins.push_back(make_f(rank + r, n, dev));
  Tensor rs = zeros({n}, {.device = dev});
  pg->reduce_scatter(rs, ins)->wait();
  expect_close(
      rs,
      [&](int64_t i) {
        double s = 0;
        for (int q = 0; q < world; ++q) s += f(q + rank, i);
        return s;
      },
      "reduce_scatter");
  // then() runs once the op is done; is_completed() then holds.
  Tensor c = make_f(rank, n, dev);
  auto w = pg->allreduce({c});
  std::atomic<bool> called{false};
  w->then([&](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
    called = true;
  });
  pg->barrier()->wait();
  w->wait(std::chrono::seconds(60));
  EXPECT(w->is_completed(), "allreduce not completed after its wait");
  for (int i = 0; i < 1000 && !called; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT(called, "then() callback did not run");
  // Bad arguments are refused at the call, naming the tensor.
  try {
    pg->allreduce({make_f(rank, 4, Device::CPU())});
    fail("a CPU tensor was accepted");
  } catch (const DistError& e) {
    EXPECT(std::string(e.what()).find("is on cpu:0") != std::string::npos, e.what());
  }
  // A subgroup of the even ranks.
  std::vector<int> evens;
  for (int r = 0; r < world; r += 2) evens.push_back(r);
  auto sub = new_group(evens);
  if (rank % 2 == 0) {
    EXPECT(sub && sub->backend_name() == "nccl", "subgroup");
    Tensor s = full({3}, 1.0, {.device = dev});
    sub->allreduce({s})->wait();
    expect_close(
        s, [&](int64_t) { return (double)evens.size(); }, "subgroup allreduce");
  } else {
    EXPECT(!sub, "a rank outside the subgroup got a group");
  }
}

// Rank 0 issues an allreduce that rank 1 never joins: the watchdog or wait(timeout) must abort
// within the group timeout with an error naming the rank and the op; later ops fail fast.
void timeout(int rank, Device dev) {
  auto pg = default_group();
  // NCCL >= 2.22 connects peers at a communicator's first collective: one op together first,
  // so that the lone op below hangs on the device (wait's timeout), not while being enqueued.
  Tensor warm = full({16}, 1.0, {.device = dev});
  pg->allreduce({warm})->wait(std::chrono::seconds(30));
  if (rank == 1) {
    std::this_thread::sleep_for(std::chrono::seconds(8));
    std::printf("OK timeout\n");
    std::fflush(stdout);
    std::_Exit(0);
  }
  Tensor a = full({16}, 1.0, {.device = dev});
  try {
    pg->allreduce({a})->wait(std::chrono::seconds(2));
    fail("the allreduce with a missing peer completed");
  } catch (const DistError& e) {
    const std::string msg = e.what();
    EXPECT(msg.find("rank 0 of 2") != std::string::npos &&
               msg.find("allreduce") != std::string::npos &&
               msg.find("timed out") != std::string::npos,
           msg);
  }
  try {
    pg->allreduce({a});
    fail("an op on an aborted communicator was accepted");
  } catch (const DistError& e) {
    EXPECT(std::string(e.what()).find("aborted") != std::string::npos, e.what());
  }
  std::printf("OK timeout\n");
  std::fflush(stdout);
  std::_Exit(0);  // the aborted group's destructor has nothing left to wait for
}

}  // namespace

int main(int argc, char** argv) {
  const std::string scenario = argc > 1 ? argv[1] : "collectives";
  try {
    const int ndev = cuda::device_count();
    if (ndev == 0) fail("no CUDA device");
    const char* lr = std::getenv("LOCAL_RANK");
    const Device dev = Device::CUDA((lr ? std::atoi(lr) : 0) % ndev);
    DeviceGuard guard(dev);  // NCCL becomes the default backend, on this rank's GPU
    InitOptions o;
    o.timeout = std::chrono::seconds(scenario == "timeout" ? 15 : 60);
    init_process_group(o);
    g_rank = get_rank();
    if (scenario == "collectives")
      collectives(get_rank(), get_world_size(), dev);
    else if (scenario == "timeout")
      timeout(get_rank(), dev);
    else
      fail("unknown scenario " + scenario);
    destroy_process_group();
  } catch (const std::exception& e) {
    fail(std::string("exception: ") + e.what());
  }
  std::printf("OK %s\n", scenario.c_str());
  return 0;
}
