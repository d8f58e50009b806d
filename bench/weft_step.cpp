// weft_step: times one training step (zero_grad, forward, loss, backward, SGD step with
// lr 0.01 and momentum 0.9) of DESIGN.md's benchmark workloads and prints one line of JSON.
//   weft_step --workload linear|convbn|mlp25m --threads N --steps S --warmup W [--batch B]
//             [--device cpu|cuda] [--wrap none|ddp|dp] [--amp none|bf16|fp16] [--breakdown]
// --breakdown also prints, to stderr, the median ms of each phase (zero_grad, forward, loss,
// backward, step) as a second JSON line; the phase clocks add a few ns to each step.
// --device cuda (CUDA builds) runs on GPU 0 with batch 256 by default and waits for the GPU at
// the end of each step. --wrap ddp wraps the model in DistributedDataParallel at world 1 (a
// process group of one, Gloo on CPU, NCCL on CUDA); --wrap dp in DataParallel over one device.
// --amp runs forward and loss under amp::autocast in that dtype (no loss scaling, in both).
// bench/torch_step.py does the same in PyTorch; bench/compare.sh runs both.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "weft/amp.h"
#include "weft/cuda.h"
#include "weft/distributed/distributed.h"
#include "weft/generator.h"
#include "weft/nn.h"
#include "weft/nn/parallel/data_parallel.h"
#include "weft/nn/parallel/distributed_data_parallel.h"
#include "weft/ops.h"
#include "weft/optim/sgd.h"
#include "weft/tensor.h"
#include "workloads.h"

namespace {

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "weft_step: %s\nusage: weft_step --workload linear|convbn|mlp25m --threads N "
               "--steps S --warmup W [--batch B] [--device cpu|cuda] [--wrap none|ddp|dp] "
               "[--breakdown]\n",
               msg);
  std::exit(2);
}

int64_t parse_int(const char* flag, const char* s) {
  std::optional<int64_t> v = weft_bench::parse_count(s);
  if (!v) usage((std::string("bad value for ") + flag).c_str());
  return *v;
}

}  // namespace

int main(int argc, char** argv) {
  std::string workload, device = "cpu", wrap = "none", amp = "none";
  int64_t threads = 1, steps = 50, warmup = 5, batch = 0;
  bool breakdown = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") usage("help");
    if (a == "--breakdown") {
      breakdown = true;
      continue;
    }
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    const char* v = argv[++i];
    if (a == "--workload")
      workload = v;
    else if (a == "--threads")
      threads = parse_int("--threads", v);
    else if (a == "--steps")
      steps = parse_int("--steps", v);
    else if (a == "--warmup")
      warmup = parse_int("--warmup", v);
    else if (a == "--batch")
      batch = parse_int("--batch", v);
    else if (a == "--device")
      device = v;
    else if (a == "--wrap")
      wrap = v;
    else if (a == "--amp")
      amp = v;
    else
      usage(("unknown flag " + a).c_str());
  }
  if (workload.empty()) usage("--workload is required");
  if (threads < 1 || steps < 1) usage("--threads and --steps must be at least 1");

  if (device != "cpu" && device != "cuda") usage("--device must be cpu or cuda");
  if (wrap != "none" && wrap != "ddp" && wrap != "dp") usage("--wrap must be none, ddp or dp");
  if (amp != "none" && amp != "bf16" && amp != "fp16") usage("--amp must be none, bf16 or fp16");
  const weft::DType amp_dtype = amp == "fp16" ? weft::DType::Float16 : weft::DType::BFloat16;
  const bool gpu = device == "cuda";
  if (gpu && !weft::cuda::is_available()) usage("--device cuda: no usable CUDA device");
  const weft::Device dev = gpu ? weft::Device::CUDA(0) : weft::Device::CPU();

  weft::set_num_threads((int)threads);
  weft::manual_seed(0);
  std::optional<weft_bench::Workload> made = weft_bench::make_workload(workload, batch, gpu);
  if (!made) usage(("unknown workload " + workload).c_str());
  weft_bench::Workload& w = *made;
  w.model->to(dev);
  w.input = w.input.to(dev);
  w.target = w.target.to(dev);
  w.model->train();
  weft::optim::SGD opt(w.model->parameters(), {.lr = 0.01, .momentum = 0.9});
  std::shared_ptr<weft::nn::Module> step_model = w.model;
  if (wrap == "ddp") {
    setenv("MASTER_ADDR", "127.0.0.1", 0);
    setenv("MASTER_PORT", "29631", 0);
    weft::dist::init_process_group({.backend = gpu ? "nccl" : "gloo", .world_size = 1, .rank = 0});
    step_model = weft::nn::DistributedDataParallel(w.model).ptr();
  } else if (wrap == "dp") {
    step_model = weft::nn::DataParallel(w.model, {.device_ids = {dev}}).ptr();
  }
  auto sync = [gpu] {
    if (gpu) weft::cuda::synchronize();
  };

  using clock = std::chrono::steady_clock;
  auto ms_between = [](clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  const char* phase_names[] = {"zero_grad", "forward", "loss", "backward", "step"};
  std::vector<double> ms;
  std::vector<double> phase_ms[5];
  ms.reserve((size_t)steps);
  volatile float sink = 0;
  for (int64_t s = 0; s < warmup + steps; ++s) {
    clock::time_point t[6];
    t[0] = clock::now();
    opt.zero_grad();
    if (breakdown) t[1] = clock::now();
    weft::Tensor out, loss;
    {
      weft::amp::autocast region(dev.type, amp_dtype, amp != "none");
      out = step_model->forward(w.input);
      if (breakdown) t[2] = clock::now();
      loss = w.loss(out, w.target);
    }
    if (breakdown) t[3] = clock::now();
    loss.backward();
    if (breakdown) t[4] = clock::now();
    opt.step();
    sync();
    t[5] = clock::now();
    if (s >= warmup) {
      ms.push_back(ms_between(t[0], t[5]));
      if (breakdown)
        for (int k = 0; k < 5; ++k) phase_ms[k].push_back(ms_between(t[k], t[k + 1]));
    }
    if (s + 1 == warmup + steps) sink = loss.item<float>();
  }
  (void)sink;
  if (breakdown) {
    std::fprintf(stderr, "{\"impl\":\"weft\",\"workload\":\"%s\",\"breakdown_median_ms\":{",
                 workload.c_str());
    for (int k = 0; k < 5; ++k)
      std::fprintf(stderr, "%s\"%s\":%.4f", k ? "," : "", phase_names[k],
                   weft_bench::percentile(phase_ms[k], 0.5));
    std::fprintf(stderr, "}}\n");
  }

  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::printf(
      "{\"impl\":\"weft\",\"workload\":\"%s\",\"device\":\"%s\",\"wrap\":\"%s\",\"amp\":\"%s\","
      "\"threads\":%lld,\"median_ms\":%.4f,\"p10_ms\":%.4f,\"p90_ms\":%.4f,\"peak_rss_mb\":%.1f}\n",
      workload.c_str(), device.c_str(), wrap.c_str(), amp.c_str(), (long long)threads,
      weft_bench::percentile(ms, 0.5), weft_bench::percentile(ms, 0.1),
      weft_bench::percentile(ms, 0.9), (double)ru.ru_maxrss / 1024.0);
  if (wrap == "ddp") weft::dist::destroy_process_group();
  return 0;
}
