// weft_ddp: the DistributedDataParallel training step of a benchmark workload at any world size
// (launch it under weft-run or torchrun; alone it is a world of one), Gloo, a fixed per-rank
// batch, and the share of the gradient all-reduce that backward hides. Rank 0 prints one JSON
// line. bench/torch_ddp.py is the PyTorch side; bench/ddp.sh runs both.
//   weft-run --nproc-per-node N weft_ddp --workload linear|convbn|mlp25m [--threads T]
//            [--steps S] [--warmup W] [--batch B]
// Every rank builds the model from seed 0 (DDP broadcasts rank 0's anyway) and draws its batch
// from seed 1000 + rank. After 3 DDP steps (the Reducer rebuilds its buckets in gradient order
// after the first) come W untimed and S timed rounds; each round times, one after another:
//   ddp        the DDP step: zero_grad, forward, loss, backward (with the bucketed all-reduces
//              overlapping it), SGD step (lr 0.01, momentum 0.9)
//   nosync     the same step under no_sync(): no gradient communication
//   allreduce  after a barrier, the all-reduces of float32 buffers the size of the Reducer's
//              buckets, issued together and all waited for: the communication with nothing to
//              hide behind
// hidden_share = 1 - (ddp - nosync) / allreduce on the medians, clamped to [0, 1]; null at
// world 1. Each reported statistic is the largest over the ranks (the slowest rank's).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "weft/distributed/ddp_comm_hooks/powersgd_hook.h"
#include "weft/distributed/distributed.h"
#include "weft/generator.h"
#include "weft/nn/parallel/distributed_data_parallel.h"
#include "weft/ops.h"
#include "weft/optim/sgd.h"
#include "weft/tensor.h"
#include "workloads.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string workload;
  std::string hook = "none";  // none, bf16 or powersgd (rank 1, after 3 plain steps)
  int64_t threads = 1, steps = 50, warmup = 5, batch = 0;
  bool bucket_view = false;  // DDP's gradient_as_bucket_view
};

[[noreturn]] void usage(const std::string& msg) {
  std::fprintf(stderr,
               "weft_ddp: %s\nusage: weft_ddp --workload linear|convbn|mlp25m [--threads N] "
               "[--steps S] [--warmup W] [--batch B] [--hook none|bf16|powersgd] "
               "[--bucket-view 0|1]\n",
               msg.c_str());
  std::exit(2);
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") usage("help");
    if (i + 1 >= argc) usage("missing value for " + flag);
    const char* v = argv[++i];
    if (flag == "--workload" || flag == "--hook") {
      (flag == "--workload" ? a.workload : a.hook) = v;
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
    else if (flag == "--bucket-view")
      a.bucket_view = *n != 0;
    else
      usage("unknown flag " + flag);
  }
  if (a.workload != "linear" && a.workload != "convbn" && a.workload != "mlp25m")
    usage("--workload must be linear, convbn or mlp25m");
  if (a.hook != "none" && a.hook != "bf16" && a.hook != "powersgd")
    usage("--hook must be none, bf16 or powersgd");
  if (a.threads < 1 || a.steps < 1) usage("--threads and --steps must be at least 1");
  return a;
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// One training step through `model` (the DDP wrapper; under no_sync() it does not communicate).
double timed_step(weft::nn::Module& model, weft_bench::Workload& w, weft::optim::SGD& opt) {
  auto t0 = Clock::now();
  opt.zero_grad();
  weft::Tensor loss = w.loss(model.forward(w.input), w.target);
  loss.backward();
  opt.step();
  return ms_since(t0);
}

// Buffers the size of each of the Reducer's buckets. Zeros: summing them never overflows.
std::vector<weft::Tensor> bucket_buffers(const weft::nn::DistributedDataParallelImpl& ddp) {
  std::vector<weft::Tensor> params;  // the Reducer's parameter list, which its indices refer to
  for (auto& [name, p] : ddp.module()->named_parameters())
    if (p.requires_grad()) params.push_back(p);
  std::vector<weft::Tensor> buffers;
  for (const auto& bucket : ddp.reducer().bucket_indices()) {
    int64_t numel = 0;
    for (size_t i : bucket) numel += params[i].numel();
    buffers.push_back(weft::zeros({numel}));
  }
  return buffers;
}

// The buckets' all-reduces alone, as the Reducer issues them (in order, asynchronously), from a
// common start: the barrier keeps one rank's lateness out of the time.
double timed_allreduces(weft::dist::ProcessGroup& pg, std::vector<weft::Tensor>& buffers) {
  pg.barrier()->wait();
  auto t0 = Clock::now();
  std::vector<std::shared_ptr<weft::dist::Work>> works;
  for (weft::Tensor& b : buffers) works.push_back(pg.allreduce({b}));
  for (auto& work : works) work->wait();
  return ms_since(t0);
}

// Elementwise maximum over the ranks.
std::vector<double> slowest(weft::dist::ProcessGroup& pg, const std::vector<double>& v) {
  std::vector<float> f(v.begin(), v.end());
  weft::Tensor t = weft::tensor(f, {(int64_t)f.size()});
  pg.allreduce({t}, weft::dist::ReduceOp::MAX)->wait();
  const float* p = t.data_ptr<float>();
  return std::vector<double>(p, p + f.size());
}

struct Samples {
  std::vector<double> ddp, nosync, allreduce;
};

Samples run_rounds(weft::nn::DistributedDataParallel& ddp, weft_bench::Workload& w,
                   weft::optim::SGD& opt, const Args& a) {
  for (int i = 0; i < 3; ++i) timed_step(*ddp, w, opt);
  std::vector<weft::Tensor> buffers = bucket_buffers(*ddp);
  Samples s;
  for (int64_t r = 0; r < a.warmup + a.steps; ++r) {
    double d = timed_step(*ddp, w, opt);
    double n;
    {
      auto no_sync = ddp->no_sync();
      n = timed_step(*ddp, w, opt);
    }
    double ar = timed_allreduces(*ddp->process_group(), buffers);
    if (r < a.warmup) continue;
    s.ddp.push_back(d);
    s.nosync.push_back(n);
    s.allreduce.push_back(ar);
  }
  return s;
}

void print_result(const Args& a, int64_t batch, const weft::nn::DistributedDataParallel& ddp,
                  const Samples& s) {
  auto& pg = *ddp->process_group();
  using weft_bench::percentile;
  std::vector<double> st =
      slowest(pg, {percentile(s.ddp, 0.5), percentile(s.ddp, 0.1), percentile(s.ddp, 0.9),
                   percentile(s.nosync, 0.5), percentile(s.allreduce, 0.5)});
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const double rss = slowest(pg, {(double)ru.ru_maxrss / 1024.0})[0];
  if (pg.rank() != 0) return;
  int64_t grad_numel = 0;
  for (const weft::Tensor& b : bucket_buffers(*ddp)) grad_numel += b.numel();
  const double exposed = st[0] - st[3];
  char hidden[32] = "null";
  if (pg.size() > 1 && st[4] > 0)
    std::snprintf(hidden, sizeof hidden, "%.4f", std::clamp(1.0 - exposed / st[4], 0.0, 1.0));
  std::printf(
      "{\"impl\":\"%s\",\"workload\":\"%s\",\"hook\":\"%s\",\"world\":%d,"
      "\"threads\":%lld,\"batch\":%lld,"
      "\"steps\":%lld,\"median_ms\":%.4f,\"p10_ms\":%.4f,\"p90_ms\":%.4f,\"nosync_ms\":%.4f,"
      "\"allreduce_ms\":%.4f,\"exposed_ms\":%.4f,\"hidden_share\":%s,\"buckets\":%zu,"
      "\"grad_mb\":%.2f,\"peak_rss_mb\":%.1f}\n",
      weft_bench::weft_impl(), a.workload.c_str(), a.hook.c_str(), pg.size(), (long long)a.threads,
      (long long)batch, (long long)a.steps, st[0], st[1], st[2], st[3], st[4], exposed, hidden,
      ddp->reducer().bucket_indices().size(), (double)grad_numel * 4 / 1e6, rss);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse_args(argc, argv);
  // Not under a launcher: a world of one.
  setenv("MASTER_ADDR", "127.0.0.1", 0);
  setenv("MASTER_PORT", "29633", 0);
  setenv("RANK", "0", 0);
  setenv("WORLD_SIZE", "1", 0);
  weft::dist::init_process_group({.backend = "gloo"});
  weft::set_num_threads((int)a.threads);
  weft::manual_seed(0);
  std::optional<weft_bench::Workload> made =
      weft_bench::make_workload(a.workload, a.batch, false, 1000 + weft::dist::get_rank());
  weft_bench::Workload& w = *made;
  w.model->train();
  weft::nn::DistributedDataParallel ddp(w.model, {.gradient_as_bucket_view = a.bucket_view});
  if (a.hook == "bf16") ddp->register_comm_hook(weft::dist::bf16_compress_hook());
  if (a.hook == "powersgd") {
    weft::dist::PowerSGDOptions o;
    o.start_powerSGD_iter = 3;  // compressing from the warm-up on, so every timed step does
    ddp->register_comm_hook(
        weft::dist::powerSGD_hook(std::make_shared<weft::dist::PowerSGDState>(o)));
  }
  weft::optim::SGD opt(w.model->parameters(), {.lr = 0.01, .momentum = 0.9});
  const Samples s = run_rounds(ddp, w, opt, a);
  print_result(a, w.input.sizes()[0], ddp, s);
  weft::dist::destroy_process_group();
  return 0;
}
