// weft_zero: the DistributedDataParallel training step with Adam (lr 1e-3) of a benchmark
// workload, the optimizer whole on every rank (--mode ddp) or sharded by
// ZeroRedundancyOptimizer (--mode zero: updated shares broadcast, one broadcast per rank, the
// default; zero-allgather: all-gathers of flat buffers; zero2: ZeRO-2, DDP's buckets
// reduce-scattered and the updated slices all-gathered, ZeroOptions::reduce_scatter_grads). Launch
// it under weft-run (alone it is a world of one), Gloo, 1 thread per rank by default.
// bench/torch_zero.py is the PyTorch side; bench/zero.sh runs both. Rank 0 prints one JSON line.
//   weft-run --nproc-per-node N weft_zero --workload mlp25m [--mode ddp|zero|zero-allgather|zero2]
//            [--threads T] [--steps S] [--warmup W] [--batch B]
// Every rank builds the model from seed 0 and draws its batch from seed 1000 + rank. After W
// untimed steps come S timed ones (zero_grad, forward, loss, backward with the bucketed
// all-reduces, optimizer step and, under ZeRO, the parameter exchange). Reported: the slowest
// rank's median, p10 and p90 step ms; each rank's peak RSS (VmHWM of /proc/self/status) and the
// bytes of optimizer state it holds.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "weft/distributed/coalesced.h"
#include "weft/distributed/distributed.h"
#include "weft/distributed/optim/zero_redundancy_optimizer.h"
#include "weft/nn/parallel/distributed_data_parallel.h"
#include "weft/ops.h"
#include "weft/optim/adam.h"
#include "workloads.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string workload = "mlp25m", mode = "zero";
  int64_t threads = 1, steps = 20, warmup = 3, batch = 0;
};

[[noreturn]] void usage(const std::string& msg) {
  std::fprintf(stderr,
               "weft_zero: %s\nusage: weft_zero [--workload linear|convbn|mlp25m] "
               "[--mode ddp|zero|zero-allgather|zero2] [--threads N] [--steps S] [--warmup W] "
               "[--batch B]\n",
               msg.c_str());
  std::exit(2);
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") usage("help");
    if (i + 1 >= argc) usage("missing value for " + flag);
    const char* v = argv[++i];
    if (flag == "--workload" || flag == "--mode") {
      (flag == "--workload" ? a.workload : a.mode) = v;
      continue;
    }
    std::optional<int64_t> n = weft_bench::parse_count(v);
    if (!n) usage("bad value for " + flag);
    if (flag == "--threads")
      a.threads = *n;
    else if (flag == "--steps")
      a.steps = *n;
    else if (flag == "--warmup")
      a.warmup = *n;
    else if (flag == "--batch")
      a.batch = *n;
    else
      usage("unknown flag " + flag);
  }
  if (a.mode != "ddp" && a.mode != "zero" && a.mode != "zero-allgather" && a.mode != "zero2")
    usage("--mode must be ddp, zero, zero-allgather or zero2");
  if (a.threads < 1 || a.steps < 1) usage("--threads and --steps must be at least 1");
  return a;
}

// VmHWM of /proc/self/status in MB (peak resident set).
double peak_rss_mb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}

double state_mb(const weft::optim::OptimizerState& st) {
  double bytes = 0;
  for (const auto& [k, t] : st.tensors) bytes += (double)t.nbytes();
  return bytes / 1e6;
}

std::string json_list(const std::vector<std::string>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s.append(i ? "," : "").append(v[i]);
  return s + "]";
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse_args(argc, argv);
  setenv("MASTER_ADDR", "127.0.0.1", 0);  // not under a launcher: a world of one
  setenv("MASTER_PORT", "29637", 0);
  setenv("RANK", "0", 0);
  setenv("WORLD_SIZE", "1", 0);
  weft::dist::init_process_group({.backend = "gloo"});
  auto& pg = *weft::dist::default_group();
  weft::set_num_threads((int)a.threads);
  weft::manual_seed(0);
  std::optional<weft_bench::Workload> made =
      weft_bench::make_workload(a.workload, a.batch, false, 1000 + weft::dist::get_rank());
  if (!made) usage("unknown --workload " + a.workload);
  weft_bench::Workload& w = *made;
  w.model->train();
  weft::nn::DistributedDataParallel ddp(w.model);
  std::unique_ptr<weft::optim::Optimizer> opt;
  weft::dist::ZeroRedundancyOptimizer* zero = nullptr;
  if (a.mode == "ddp") {
    opt = std::make_unique<weft::optim::Adam>(w.model->parameters(),
                                              weft::optim::AdamOptions{.lr = 1e-3});
  } else {
    weft::dist::ZeroOptions zo;
    if (a.mode == "zero-allgather")
      zo.parameter_sync = weft::dist::ZeroOptions::ParameterSync::AllGather;
    zo.reduce_scatter_grads = a.mode == "zero2";
    auto z = std::make_unique<weft::dist::ZeroRedundancyOptimizer>(
        w.model->parameters(),
        [](std::vector<weft::optim::ParamGroup> g) {
          return std::make_unique<weft::optim::Adam>(std::move(g));
        },
        weft::optim::ParamGroupOptions{.lr = 1e-3}, nullptr, zo);
    zero = z.get();
    if (zo.reduce_scatter_grads) zero->attach(ddp->reducer());
    opt = std::move(z);
  }
  std::vector<double> ms;
  for (int64_t s = 0; s < a.warmup + a.steps; ++s) {
    const auto t0 = Clock::now();
    opt->zero_grad();
    w.loss(ddp->forward(w.input), w.target).backward();
    opt->step();
    const double d = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (s >= a.warmup) ms.push_back(d);
  }
  using weft_bench::percentile;
  std::vector<float> st = {(float)percentile(ms, 0.5), (float)percentile(ms, 0.1),
                           (float)percentile(ms, 0.9)};
  weft::Tensor t = weft::tensor(st, {3});
  pg.allreduce({t}, weft::dist::ReduceOp::MAX)->wait();
  const float* slow = t.data_ptr<float>();
  const double state = state_mb(zero ? zero->local_optimizer().state_dict() : opt->state_dict());
  char mine[64];
  std::snprintf(mine, sizeof mine, "%.1f %.1f", peak_rss_mb(), state);
  const auto all = weft::dist::all_gather_strings(pg, mine);
  std::vector<std::string> rss, states;
  for (const auto& s : all) {
    rss.push_back(s.substr(0, s.find(' ')));
    states.push_back(s.substr(s.find(' ') + 1));
  }
  if (pg.rank() == 0) {
    std::printf(
        "{\"impl\":\"%s\",\"mode\":\"%s\",\"workload\":\"%s\",\"world\":%d,\"threads\":%lld,"
        "\"batch\":%lld,\"steps\":%lld,\"median_ms\":%.4f,\"p10_ms\":%.4f,\"p90_ms\":%.4f,"
        "\"peak_rss_mb\":%s,\"optim_state_mb\":%s}\n",
        weft_bench::weft_impl(), a.mode.c_str(), a.workload.c_str(), pg.size(),
        (long long)a.threads, (long long)w.input.sizes()[0], (long long)a.steps, slow[0], slow[1],
        slow[2], json_list(rss).c_str(), json_list(states).c_str());
    std::fflush(stdout);
  }
  weft::dist::destroy_process_group();
  return 0;
}
