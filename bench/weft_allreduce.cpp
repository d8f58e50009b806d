// weft_allreduce: the raw all-reduce (SUM, float32, in place, one tensor) over the default
// Gloo group, for each size asked; launch it under weft-run (alone it is a world of one).
//   weft-run --nproc-per-node 2 weft_allreduce [--numel 21000000,20000] [--iters N] [--warmup W]
//                                              [--op allreduce|reduce_scatter|allgather|broadcast]
// --op times another collective instead: reduce_scatter_tensor (SUM) of a numel-element input,
// all_gather_into_tensor into a numel-element output, broadcast of numel elements from rank 0.
// Rank 0 prints one JSON line per size: median, p10 and p90 ms of one all-reduce (each waited
// for before the next is issued; back to back, so the ranks stay in step) and the algorithm
// bandwidth bytes / median. Each statistic is the largest over the ranks. The defaults are
// mlp25m's gradients (84 MB) and a small bucket (80 KB); bench/torch_allreduce.py is PyTorch's.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "weft/distributed/distributed.h"
#include "weft/ops.h"
#include "weft/tensor.h"
#include "workloads.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::vector<int64_t> numels = {21000000, 20000};
  int64_t iters = 50, warmup = 5;
  std::string op = "allreduce";
};

[[noreturn]] void usage(const std::string& msg) {
  std::fprintf(stderr,
               "weft_allreduce: %s\nusage: weft_allreduce [--numel N[,N...]] [--iters N] "
               "[--warmup W] [--op allreduce|reduce_scatter|allgather|broadcast]\n",
               msg.c_str());
  std::exit(2);
}

int64_t count(const std::string& flag, const std::string& v) {
  std::optional<int64_t> n = weft_bench::parse_count(v.c_str());
  if (!n || *n < 1) usage("bad value for " + flag);
  return *n;
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") usage("help");
    if (i + 1 >= argc) usage("missing value for " + flag);
    std::string v = argv[++i];
    if (flag == "--numel") {
      a.numels.clear();
      std::stringstream ss(v);
      for (std::string item; std::getline(ss, item, ',');) a.numels.push_back(count(flag, item));
    } else if (flag == "--op") {
      if (v != "allreduce" && v != "reduce_scatter" && v != "allgather" && v != "broadcast")
        usage("bad value for --op: " + v);
      a.op = v;
    } else if (flag == "--iters") {
      a.iters = count(flag, v);
    } else if (flag == "--warmup") {
      a.warmup = weft_bench::parse_count(v.c_str()).value_or(-1);
      if (a.warmup < 0) usage("bad value for --warmup");
    } else {
      usage("unknown flag " + flag);
    }
  }
  return a;
}

// One call of the op over a buffer of `numel` float32s (zeros: repeated sums never overflow).
std::function<void()> make_op(weft::dist::ProcessGroup& pg, int64_t numel, const std::string& op) {
  weft::Tensor t = weft::zeros({numel});
  const int64_t part = numel / pg.size();
  weft::Tensor big = t.narrow(0, 0, part * pg.size()), small = weft::zeros({part});
  if (op == "reduce_scatter")
    return [&pg, big, small] { pg.reduce_scatter_tensor(small, big)->wait(); };
  if (op == "allgather") return [&pg, big, small] { pg.allgather_into_tensor(big, small)->wait(); };
  if (op == "broadcast") return [&pg, t] { pg.broadcast({t}, 0)->wait(); };
  return [&pg, t] { pg.allreduce({t})->wait(); };
}

// Median, p10 and p90 ms of one op over `numel` float32s; the slowest rank's.
std::vector<float> time_op(weft::dist::ProcessGroup& pg, int64_t numel, const Args& a) {
  const std::function<void()> run = make_op(pg, numel, a.op);
  std::vector<double> ms;
  for (int64_t i = 0; i < a.warmup + a.iters; ++i) {
    auto t0 = Clock::now();
    run();
    if (i >= a.warmup)
      ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::vector<float> st = {(float)weft_bench::percentile(ms, 0.5),
                           (float)weft_bench::percentile(ms, 0.1),
                           (float)weft_bench::percentile(ms, 0.9)};
  weft::Tensor s = weft::tensor(st, {3});
  pg.allreduce({s}, weft::dist::ReduceOp::MAX)->wait();
  const float* p = s.data_ptr<float>();
  return {p[0], p[1], p[2]};
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse_args(argc, argv);
  setenv("MASTER_ADDR", "127.0.0.1", 0);  // not under a launcher: a world of one
  setenv("MASTER_PORT", "29634", 0);
  setenv("RANK", "0", 0);
  setenv("WORLD_SIZE", "1", 0);
  weft::dist::init_process_group({.backend = "gloo"});
  weft::set_num_threads(1);
  auto pg = weft::dist::default_group();
  pg->barrier()->wait();
  for (int64_t numel : a.numels) {
    std::vector<float> st = time_op(*pg, numel, a);
    if (pg->rank() != 0) continue;
    const double bytes = (double)numel * 4;
    std::printf(
        "{\"impl\":\"%s\",\"bench\":\"%s\",\"world\":%d,\"numel\":%lld,\"bytes\":%.0f,"
        "\"iters\":%lld,\"median_ms\":%.4f,\"p10_ms\":%.4f,\"p90_ms\":%.4f,\"algbw_gbps\":%.3f}\n",
        weft_bench::weft_impl(), a.op.c_str(), pg->size(), (long long)numel, bytes,
        (long long)a.iters, st[0], st[1], st[2], bytes / (st[0] * 1e6));
    std::fflush(stdout);
  }
  weft::dist::destroy_process_group();
  return 0;
}
