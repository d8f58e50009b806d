// weft_fsdp: one training strategy's step time and per-rank peak memory at any world size (launch
// it under weft-run; alone it is a world of one). Rank 0 prints one JSON line.
//   weft-run --nproc-per-node N weft_fsdp --strategy ddp|zero|fsdp --model mlp25m|mlp100m
//            [--optim adam|sgd] [--steps S] [--warmup W] [--batch B] [--threads T]
//            [--overlap 0|1]
// ddp: DistributedDataParallel and the plain optimizer; zero: the same with
// ZeroRedundancyOptimizer; fsdp: FullyShardedDataParallel with each child of the model's
// Sequential a unit (a Linear of mlp25m, a block of mlp100m), then the root; --overlap 0 turns
// off FSDPOptions::backward_prefetch and overlap_reduce_scatter (less memory, less overlap).
// Memory: the CPU allocator's high-water mark of tensor bytes over the timed steps (after the
// set-up, whose full model every rank builds before sharding), and the process's peak RSS.
// The FSDP bound printed beside it: (parameters + gradients + optimizer state) / N + the
// largest unit unsharded + the activations (the bytes of every leaf module's output in one
// forward, measured with forward hooks).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "weft/allocator.h"
#include "weft/autograd.h"
#include "weft/distributed/distributed.h"
#include "weft/distributed/fsdp/fully_sharded_data_parallel.h"
#include "weft/distributed/optim/zero_redundancy_optimizer.h"
#include "weft/nn.h"
#include "weft/nn/parallel/distributed_data_parallel.h"
#include "weft/ops.h"
#include "weft/optim.h"
#include "workloads.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace F = weft::nn::functional;
namespace fsdp = weft::dist::fsdp;

struct Args {
  std::string strategy = "fsdp", model = "mlp25m", optim = "adam";
  int64_t threads = 1, steps = 10, warmup = 2, batch = 16;
  bool overlap = true;  // fsdp: backward_prefetch and overlap_reduce_scatter
};

[[noreturn]] void usage(const std::string& msg) {
  std::fprintf(
      stderr,
      "weft_fsdp: %s\nusage: weft_fsdp --strategy ddp|zero|fsdp --model mlp25m|mlp100m "
      "[--optim adam|sgd] [--steps S] [--warmup W] [--batch B] [--threads T] [--overlap 0|1]\n",
      msg.c_str());
  std::exit(2);
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) usage("missing value for " + flag);
    const char* v = argv[++i];
    if (flag == "--strategy") {
      a.strategy = v;
    } else if (flag == "--model") {
      a.model = v;
    } else if (flag == "--optim") {
      a.optim = v;
    } else {
      auto n = weft_bench::parse_count(v);
      if (!n) usage("bad value for " + flag);
      if (flag == "--threads")
        a.threads = *n;
      else if (flag == "--steps")
        a.steps = *n;
      else if (flag == "--warmup")
        a.warmup = *n;
      else if (flag == "--batch")
        a.batch = *n;
      else if (flag == "--overlap" && *n <= 1)
        a.overlap = *n == 1;
      else
        usage("unknown flag " + flag);
    }
  }
  if (a.strategy != "ddp" && a.strategy != "zero" && a.strategy != "fsdp")
    usage("--strategy must be ddp, zero or fsdp");
  if (a.model != "mlp25m" && a.model != "mlp100m") usage("--model must be mlp25m or mlp100m");
  if (a.optim != "adam" && a.optim != "sgd") usage("--optim must be adam or sgd");
  return a;
}

// mlp25m as bench/workloads.cpp builds it; mlp100m: 12 blocks of two 2048x2048 Linears (100.7M).
std::shared_ptr<weft::nn::Module> make_model(const std::string& name, int64_t& width) {
  weft::manual_seed(0);
  using namespace weft::nn;
  if (name == "mlp25m") {
    width = 1024;
    return Sequential{Linear(1024, 2048), ReLU(), Linear(2048, 4096), ReLU(),
                      Linear(4096, 2048), ReLU(), Linear(2048, 1024)}
        .ptr();
  }
  width = 2048;
  Sequential s;
  for (int b = 0; b < 12; ++b)
    s->push_back(Sequential{Linear(2048, 2048), ReLU(), Linear(2048, 2048), ReLU()}.ptr());
  return s.ptr();
}

// Bytes of every leaf module's output in one forward: the activations.
double activation_bytes(weft::nn::Module& model, const weft::Tensor& x) {
  double bytes = 0;
  std::vector<weft::nn::RemovableHandle> hs;
  std::vector<std::shared_ptr<weft::nn::Module>> leaves;
  for (auto& [n, m] : model.named_modules())
    if (m->named_children().empty()) leaves.push_back(m);
  for (auto& m : leaves)
    hs.push_back(m->register_forward_hook(
        [&](weft::nn::Module&, const std::vector<weft::Tensor>&,
            const std::vector<weft::Tensor>& out) -> std::optional<std::vector<weft::Tensor>> {
          for (auto& t : out) bytes += (double)t.nbytes();
          return std::nullopt;
        }));
  {
    weft::NoGradGuard ng;
    model(x);
  }
  for (auto& h : hs) h.remove();
  return bytes;
}

std::unique_ptr<weft::optim::Optimizer> make_opt(const Args& a, std::vector<weft::Tensor> ps) {
  std::vector<weft::optim::ParamGroup> g{{std::move(ps), {.lr = 1e-4, .momentum = 0.9}}};
  if (a.optim == "sgd") return std::make_unique<weft::optim::SGD>(std::move(g));
  return std::make_unique<weft::optim::Adam>(std::move(g));
}

std::vector<double> slowest(weft::dist::ProcessGroup& pg, const std::vector<double>& v) {
  std::vector<float> f(v.begin(), v.end());
  weft::Tensor t = weft::tensor(f, {(int64_t)f.size()});
  pg.allreduce({t}, weft::dist::ReduceOp::MAX)->wait();
  const float* p = t.data_ptr<float>();
  return std::vector<double>(p, p + f.size());
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse_args(argc, argv);
  setenv("MASTER_ADDR", "127.0.0.1", 0);
  setenv("MASTER_PORT", "29634", 0);
  setenv("RANK", "0", 0);
  setenv("WORLD_SIZE", "1", 0);
  weft::dist::init_process_group({.backend = "gloo"});
  weft::set_num_threads((int)a.threads);
  auto pg = weft::dist::default_group();
  const int world = pg->size();
  int64_t width = 0;
  auto model = make_model(a.model, width);
  weft::Generator gen(1000 + pg->rank());
  weft::Tensor x = weft::randn({a.batch, width}, &gen), y = weft::randn({a.batch, width}, &gen);
  const double act = activation_bytes(*model, x);
  int64_t numel = 0, largest = 0;
  for (auto& c : model->children()) {
    int64_t n = 0;
    for (auto& p : c->parameters()) n += p.numel();
    largest = std::max(largest, (n + world - 1) / world * world);
  }
  for (auto& p : model->parameters()) numel += p.numel();

  std::function<weft::Tensor(const weft::Tensor&)> fwd;
  std::unique_ptr<weft::optim::Optimizer> opt;
  std::optional<weft::nn::DistributedDataParallel> ddp;
  std::optional<fsdp::FullyShardedDataParallel> sharded;
  if (a.strategy == "fsdp") {
    fsdp::FSDPOptions o;
    o.backward_prefetch = o.overlap_reduce_scatter = a.overlap;
    sharded.emplace(model, o, fsdp::wrap_children());
    opt = make_opt(a, sharded->parameters());
    fwd = [&](const weft::Tensor& t) { return (*sharded)(t); };
  } else {
    ddp.emplace(model);
    if (a.strategy == "zero")
      opt = std::make_unique<weft::dist::ZeroRedundancyOptimizer>(
          (*ddp)->parameters(),
          [&](std::vector<weft::optim::ParamGroup> g) { return make_opt(a, g[0].params); },
          weft::optim::ParamGroupOptions{.lr = 1e-4, .momentum = 0.9});
    else
      opt = make_opt(a, (*ddp)->parameters());
    fwd = [&](const weft::Tensor& t) { return (*ddp)(t); };
  }
  weft::empty_cache();  // the unsharded model built above is gone under FSDP
  weft::reset_peak_allocated_bytes();
  if (std::getenv("FSDP_DEBUG"))
    std::fprintf(stderr, "rank %d: %.1f MB allocated after set-up\n", pg->rank(),
                 (double)weft::cpu_allocator_stats().allocated_bytes / 1e6);
  std::vector<double> ms;
  for (int64_t s = 0; s < a.warmup + a.steps; ++s) {
    pg->barrier()->wait();
    auto t0 = Clock::now();
    opt->zero_grad();
    F::mse_loss(fwd(x), y).backward();
    opt->step();
    const double d = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (s >= a.warmup) ms.push_back(d);
  }
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const auto st = weft::cpu_allocator_stats();
  const std::vector<double> m =
      slowest(*pg, {weft_bench::percentile(ms, 0.5), (double)st.peak_allocated_bytes / 1e6,
                    (double)ru.ru_maxrss / 1024.0});
  if (pg->rank() == 0) {
    const double state_per_param = a.optim == "adam" ? 16 : 12;  // param, grad, state
    const double bound =
        state_per_param * (double)numel / world / 1e6 + 4.0 * (double)largest / 1e6 + act / 1e6;
    std::printf(
        "{\"impl\":\"weft\",\"strategy\":\"%s\",\"overlap\":%d,\"model\":\"%s\",\"optim\":\"%s\","
        "\"world\":%d,"
        "\"batch\":%lld,\"params\":%lld,\"steps\":%lld,\"median_ms\":%.3f,"
        "\"peak_tensor_mb\":%.1f,\"peak_rss_mb\":%.1f,\"largest_unit_mb\":%.1f,"
        "\"activations_mb\":%.1f,\"fsdp_bound_mb\":%.1f}\n",
        a.strategy.c_str(), (int)a.overlap, a.model.c_str(), a.optim.c_str(), world,
        (long long)a.batch, (long long)numel, (long long)a.steps, m[0], m[1], m[2],
        4.0 * (double)largest / 1e6, act / 1e6, bound);
    std::fflush(stdout);
  }
  weft::dist::destroy_process_group();
  return 0;
}
