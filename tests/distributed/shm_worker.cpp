// weft_shm_worker: one rank of the shared-memory all-reduce tests (tests/test_shm_allreduce.cpp,
// under weft-run; tests/distributed/multihost.sh across network namespaces). argv[1] picks the
// scenario. Every rank prints "SHM_SEGMENT <name>" (or "SHM_SEGMENT none") for its default group,
// "DISTERROR: ..." for the errors a scenario expects, and "OK rank=R" when all is as expected;
// a check that fails prints "FAIL: ..." and exits 1 (worker_check.h).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "weft/distributed/distributed.h"
#include "weft/distributed/gloo/process_group_gloo.h"
#include "weft/half.h"
#include "weft/tensor.h"
#include "worker_check.h"

using namespace weft;
using namespace weft::dist;

namespace {

using weft::test::fail;
using weft::test::g_rank;

std::string segment_of(const std::shared_ptr<ProcessGroup>& pg) {
  auto* gloo = dynamic_cast<ProcessGroupGloo*>(&pg->backend());
  EXPECT(gloo, "the default group is ", pg->backend_name(), ", not gloo");
  return gloo->shm_segment_name();
}

std::shared_ptr<ProcessGroup> init() {
  init_process_group({.backend = "gloo", .timeout = std::chrono::seconds(60)});
  auto pg = default_group();
  g_rank = pg->rank();
  const std::string seg = segment_of(pg);
  std::printf("SHM_SEGMENT %s\n", seg.empty() ? "none" : seg.c_str());
  std::fflush(stdout);
  return pg;
}

// The same group through Gloo alone: WEFT_SHM=0 while every rank creates it.
std::shared_ptr<ProcessGroup> gloo_only_group(int world) {
  const char* old = std::getenv("WEFT_SHM");
  const std::string saved = old ? old : "";
  setenv("WEFT_SHM", "0", 1);
  std::vector<int> all;
  for (int r = 0; r < world; ++r) all.push_back(r);
  auto g = new_group(all);
  if (old)
    setenv("WEFT_SHM", saved.c_str(), 1);
  else
    unsetenv("WEFT_SHM");
  EXPECT(segment_of(g).empty(), "a WEFT_SHM=0 group uses shared memory");
  return g;
}

// A rank- and index-dependent value in [-2, 2) (PRODUCT: [0.75, 1.25), int64: small), so sums
// round differently in different orders and products stay finite even in fp16.
double value(int r, int64_t i, ReduceOp op, DType dt) {
  const uint32_t h = static_cast<uint32_t>((r + 1) * 2654435761u ^ (i * 40503u + 17u)) & 0xffff;
  if (dt == kInt64) return op == ReduceOp::PRODUCT ? 1 + h % 3 : static_cast<double>(h) - 32768;
  if (op == ReduceOp::PRODUCT) return 0.75 + h / 131072.0;
  return h / 16384.0 - 2.0;
}

Tensor make_input(int r, int64_t n, ReduceOp op, DType dt) {
  Tensor t = make_empty({n}, dt);
  for (int64_t i = 0; i < n; ++i) {
    const double v = value(r, i, op, dt);
    switch (dt) {
      case DType::Float32:
        t.data_ptr<float>()[i] = static_cast<float>(v);
        break;
      case DType::Int64:
        t.data_ptr<int64_t>()[i] = static_cast<int64_t>(v);
        break;
      case DType::BFloat16:
        static_cast<uint16_t*>(t.raw_data())[i] = float_to_bf16(static_cast<float>(v));
        break;
      case DType::Float16:
        static_cast<uint16_t*>(t.raw_data())[i] = float_to_fp16(static_cast<float>(v));
        break;
    }
  }
  return t;
}

double element(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::Float32:
      return t.data_ptr<float>()[i];
    case DType::Int64:
      return static_cast<double>(t.data_ptr<int64_t>()[i]);
    case DType::BFloat16:
      return bf16_to_float(static_cast<const uint16_t*>(t.raw_data())[i]);
    case DType::Float16:
      return fp16_to_float(static_cast<const uint16_t*>(t.raw_data())[i]);
  }
  return 0;
}

double epsilon(DType dt) {
  return dt == DType::Float32    ? 1.2e-7
         : dt == DType::BFloat16 ? 7.9e-3
         : dt == DType::Float16  ? 9.8e-4
                                 : 0;
}

// shm's result against Gloo's (the reference), for one op: the same bits where the reduction is
// exact or the order cannot matter (two ranks; MAX/MIN; int64), otherwise within a few roundings
// of the magnitudes involved.
// Element i of the results came from element i + offset of the inputs.
void compare(const Tensor& shm, const Tensor& gloo, int world, ReduceOp op, const std::string& what,
             int64_t offset = 0) {
  const bool exact =
      world == 2 || op == ReduceOp::MAX || op == ReduceOp::MIN || shm.dtype() == kInt64;
  if (exact) {
    EXPECT(std::memcmp(shm.raw_data(), gloo.raw_data(), shm.nbytes()) == 0, what,
           ": differs from Gloo's result bit for bit");
    return;
  }
  for (int64_t i = 0; i < shm.numel(); ++i) {
    double scale = op == ReduceOp::PRODUCT ? 1 : 0;
    for (int r = 0; r < world; ++r) {
      const double v = std::abs(value(r, i + offset, op, shm.dtype()));
      scale = op == ReduceOp::PRODUCT ? scale * v : scale + v;
    }
    if (op == ReduceOp::AVG) scale /= world;
    const double a = element(shm, i), b = element(gloo, i);
    EXPECT(std::abs(a - b) <= 2 * world * epsilon(shm.dtype()) * scale, what, ": element ", i,
           " is ", a, " by shared memory, ", b, " by Gloo");
  }
}

// reduce_scatter_tensor, all_gather_into_tensor (in place, as FSDP gathers) and broadcast from
// the last rank, which one host also runs through the segment, against Gloo's.
int tensor_collectives(ProcessGroup& pg, ProcessGroup& ref) {
  const int world = pg.size();
  int checked = 0;
  for (DType dt : {kFloat32, kInt64})
    for (ReduceOp op : {ReduceOp::SUM, ReduceOp::AVG, ReduceOp::MAX, ReduceOp::PRODUCT})
      for (int64_t m : {int64_t{1}, int64_t{4099}, int64_t{65536 + 20001}}) {
        if (dt == kInt64 && op == ReduceOp::AVG) continue;
        const std::string what = std::string("reduce_scatter_tensor ") + dtype_name(dt) + " " +
                                 to_string(op) + " of " + std::to_string(m);
        Tensor in = make_input(g_rank, world * m, op, dt);
        Tensor a = make_empty({m}, dt), b = make_empty({m}, dt);
        pg.reduce_scatter_tensor(a, in, op)->wait();
        ref.reduce_scatter_tensor(b, in, op)->wait();
        compare(a, b, world, op, what, g_rank * m);
        Tensor ga = make_empty({world * m}, dt), gb = make_empty({world * m}, dt);
        ga.narrow(0, g_rank * m, m).copy_(a);
        pg.allgather_into_tensor(ga, ga.narrow(0, g_rank * m, m))->wait();
        ref.allgather_into_tensor(gb, a)->wait();  // the same parts: a copy, bit for bit
        EXPECT(std::memcmp(ga.raw_data(), gb.raw_data(), ga.nbytes()) == 0,
               "all_gather_into_tensor after ", what, ": differs from Gloo's");
        Tensor c = make_input(g_rank, m, op, dt), d = c.clone();
        pg.broadcast({c}, world - 1)->wait();
        ref.broadcast({d}, world - 1)->wait();
        EXPECT(std::memcmp(c.raw_data(), d.raw_data(), c.nbytes()) == 0, "broadcast of ", m, " ",
               dtype_name(dt), " from rank ", world - 1, ": differs from Gloo's");
        checked += 3;
      }
  return checked;
}

// Where the mapping that holds `p` comes from, as /proc/self/maps names it ("" if anonymous).
std::string mapping_of(const void* p) {
  std::FILE* f = std::fopen("/proc/self/maps", "r");
  EXPECT(f, "cannot read /proc/self/maps");
  const auto at = reinterpret_cast<uintptr_t>(p);
  std::string found;
  char line[4096];
  while (std::fgets(line, sizeof line, f)) {
    uintptr_t lo = 0, hi = 0;
    int path = 0;
    if (std::sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &path) < 2) continue;
    if (at >= lo && at < hi) {
      found = std::string(line + path);
      while (!found.empty() && found.back() == '\n') found.pop_back();
    }
  }
  std::fclose(f);
  return found;
}

// Symmetric tensors (Note [Symmetric buffers]): on one host mapped from /dev/shm with the name
// already gone, zero-filled, and all-reduced in place, whole or through a view, as Gloo reduces
// copies of the same data. Across hosts (WEFT_SHM_HOST_ID set) ordinary tensors.
int symmetric(ProcessGroup& pg, ProcessGroup& ref) {
  const bool one_host = std::getenv("WEFT_SHM_HOST_ID") == nullptr;
  const int64_t n = 65536 + 20001;
  int checked = 0;
  for (DType dt : {kFloat32, DType::BFloat16, kInt64})
    for (ReduceOp op : {ReduceOp::SUM, ReduceOp::AVG, ReduceOp::MAX}) {
      if (dt == kInt64 && op == ReduceOp::AVG) continue;
      Tensor s = pg.empty_symmetric({n}, dt);
      const std::string where = mapping_of(s.raw_data());
      if (one_host)
        EXPECT(where.starts_with("/dev/shm/weft-") && where.ends_with(" (deleted)"),
               "a symmetric tensor lies in '", where, "', not an unlinked weft segment");
      else
        EXPECT(where.find("/dev/shm") == std::string::npos,
               "a symmetric tensor of a group across hosts lies in ", where);
      for (int64_t i = 0; i < n; ++i) EXPECT(element(s, i) == 0, "not zero-filled at ", i);
      const Tensor in = make_input(g_rank, n, op, dt);
      for (auto [first, count] : {std::pair<int64_t, int64_t>{0, n}, {37, 4099}}) {
        s.copy_(in);
        Tensor b = in.clone();
        pg.allreduce({s.narrow(0, first, count)}, op)->wait();
        ref.allreduce({b.narrow(0, first, count)}, op)->wait();
        compare(s, b, pg.size(), op,
                std::string("symmetric ") + dtype_name(dt) + " " + to_string(op) + " of " +
                    std::to_string(count) + " at " + std::to_string(first));
        ++checked;
      }
    }
  return checked;
}

// Every dtype and op at sizes around the pipeline's edges; then large float32/bf16 tensors.
void equivalence() {
  auto pg = init();
  const int world = pg->size();
  EXPECT(!segment_of(pg).empty(), "the default group does not use shared memory");
  auto ref = gloo_only_group(world);
  const int64_t sizes[] = {1, 37, 4099, 65536 + 20001};
  const ReduceOp ops[] = {ReduceOp::SUM, ReduceOp::AVG, ReduceOp::MAX, ReduceOp::MIN,
                          ReduceOp::PRODUCT};
  int checked = 0;
  for (DType dt : {kFloat32, kInt64, DType::BFloat16, DType::Float16})
    for (ReduceOp op : ops)
      for (int64_t n : sizes) {
        Tensor a = make_input(g_rank, n, op, dt), b = a.clone();
        auto wa = pg->allreduce({a}, op);
        ref->allreduce({b}, op)->wait();
        wa->wait();
        compare(a, b, world, op,
                std::string(dtype_name(dt)) + " " + to_string(op) + " of " + std::to_string(n));
        ++checked;
      }
  // Larger: many pipeline steps; several tensors in one call, in flight together.
  for (DType dt : {kFloat32, DType::BFloat16})
    for (ReduceOp op : {ReduceOp::SUM, ReduceOp::AVG}) {
      const int64_t n = 1000003;
      Tensor a = make_input(g_rank, n, op, dt), b = a.clone(), c = make_input(g_rank, 5, op, dt),
             d = c.clone();
      auto wa = pg->allreduce({a, c}, op);
      ref->allreduce({b, d}, op)->wait();
      wa->wait();
      compare(a, b, world, op, std::string("large ") + dtype_name(dt) + " " + to_string(op));
      compare(c, d, world, op,
              std::string("second tensor ") + dtype_name(dt) + " " + to_string(op));
      ++checked;
    }
  // reduce_scatter goes through the same path.
  {
    std::vector<Tensor> ins, ref_ins;
    for (int j = 0; j < world; ++j) {
      ins.push_back(make_input(g_rank + 10 * j, 33, ReduceOp::SUM, kFloat32));
      ref_ins.push_back(ins.back().clone());
    }
    Tensor out = make_empty({33}, kFloat32), ref_out = make_empty({33}, kFloat32);
    pg->reduce_scatter(out, ins, ReduceOp::MAX)->wait();
    ref->reduce_scatter(ref_out, ref_ins, ReduceOp::MAX)->wait();
    compare(out, ref_out, world, ReduceOp::MAX, "reduce_scatter");
  }
  checked += tensor_collectives(*pg, *ref);
  checked += symmetric(*pg, *ref);
  pg->barrier()->wait();
  std::printf("OK rank=%d checked=%d\n", g_rank, checked);
  ref.reset();
  pg.reset();
  destroy_process_group();
}

// One rank turns the path off: every rank must fall back to Gloo, and still compute right.
void one_rank_off() {
  if (std::getenv("RANK") && std::string(std::getenv("RANK")) == "1") setenv("WEFT_SHM", "0", 1);
  auto pg = init();
  EXPECT(segment_of(pg).empty(), "shared memory in use although rank 1 set WEFT_SHM=0");
  Tensor t = make_input(g_rank, 1000, ReduceOp::SUM, kInt64);
  pg->allreduce({t})->wait();
  for (int64_t i = 0; i < 1000; ++i) {
    double want = 0;
    for (int r = 0; r < pg->size(); ++r) want += value(r, i, ReduceOp::SUM, kInt64);
    EXPECT(element(t, i) == want, "element ", i, " is ", element(t, i), ", want ", want);
  }
  std::printf("OK rank=%d\n", g_rank);
  pg.reset();
  destroy_process_group();
}

// Ranks pass tensors of different sizes: each fails naming the other's.
void mismatch() {
  auto pg = init();
  Tensor t = make_input(g_rank, 100 + g_rank, ReduceOp::SUM, kFloat32);
  try {
    pg->allreduce({t})->wait();
    fail("mismatched sizes did not fail");
  } catch (const DistError& e) {
    std::printf("DISTERROR: %s\nOK rank=%d\n", e.what(), g_rank);
  }
  std::fflush(stdout);
  std::_Exit(0);  // the group is broken; nothing to tidy
}

void report_and_exit(const DistError& e) {
  std::printf("DISTERROR: %s\nOK rank=%d\n", e.what(), g_rank);
  std::fflush(stdout);
  std::_Exit(0);
}

// The last rank dies by SIGKILL mid-job (after its segment is set up and used); the others'
// next all-reduce must fail naming it. weft-run SIGTERMs the survivors when a rank dies: they
// ignore it, and report before its grace period ends.
void peer_killed() {
  signal(SIGTERM, SIG_IGN);
  auto pg = init();
  const int last = pg->size() - 1;
  Tensor t = make_input(g_rank, 100000, ReduceOp::SUM, kFloat32);
  pg->allreduce({t})->wait();
  // The next all-reduce is of a symmetric tensor, which peers write into
  // (Note [Symmetric buffers]): it fails the same way.
  Tensor s = pg->empty_symmetric({100000});
  s.copy_(t);
  if (g_rank == last) kill(getpid(), SIGKILL);
  try {
    pg->allreduce({s})->wait();
    fail("the all-reduce with a dead peer did not fail");
  } catch (const DistError& e) {
    report_and_exit(e);
  }
}

// The last rank never joins the all-reduce; the others time out naming it (short timeout). It
// waits until they have reported (a file each in WEFT_TEST_DIR), so its absence is certain.
void peer_stalls() {
  auto pg = init();
  const int last = pg->size() - 1;
  const char* dir = std::getenv("WEFT_TEST_DIR");
  EXPECT(dir, "WEFT_TEST_DIR is not set");
  const auto flag = [&](int r) { return std::string(dir) + "/failed." + std::to_string(r); };
  if (g_rank == last) {
    for (int r = 0; r < last; ++r)
      while (!std::filesystem::exists(flag(r)))
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::printf("OK rank=%d (stalled)\n", g_rank);
    std::fflush(stdout);
    std::_Exit(0);
  }
  pg->set_timeout(std::chrono::milliseconds(1500));
  Tensor t = make_input(g_rank, 1000, ReduceOp::SUM, kFloat32);
  try {
    // Waited for longer than the op's own timeout, so that the op's error is what surfaces.
    pg->allreduce({t})->wait(std::chrono::seconds(60));
    fail("the all-reduce with a stalled peer did not fail");
  } catch (const DistError& e) {
    std::FILE* f = std::fopen(flag(g_rank).c_str(), "w");
    if (f) std::fclose(f);
    report_and_exit(e);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string scenario = argc > 1 ? argv[1] : "";
  try {
    if (scenario == "equiv") {
      equivalence();
    } else if (scenario == "one_off") {
      one_rank_off();
    } else if (scenario == "mismatch") {
      mismatch();
    } else if (scenario == "kill9") {
      peer_killed();
    } else if (scenario == "stall") {
      peer_stalls();
    } else {
      fail("unknown scenario '" + scenario + "'");
    }
  } catch (const std::exception& e) {
    fail(std::string("exception: ") + e.what());
  }
  std::fflush(stdout);
  return 0;
}
