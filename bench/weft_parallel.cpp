// Benchmarks of weft's parallel pieces (never timed tests); one JSON line per measurement.
//   weft_parallel shuffle --threads N   ChannelShuffle (64,232,28,28) groups 4 vs a plain copy
//                  [--device cuda]     (on GPU 0: device-to-device copy vs the CUDA kernels)
//   weft_parallel dp --devices K        convbn step (batch 64): plain module with 1 thread vs
//                                       DataParallel over K CPU devices with 1 thread each
//   weft_parallel bn                    SyncBatchNorm fwd+bwd on (64,232,28,28) per rank; run
//                                       alone (plain BatchNorm, world 1) and under weft-run
#include <weft/cuda.h>
#include <weft/distributed/distributed.h>
#include <weft/nn/parallel/data_parallel.h>
#include <weft/nn/sync_batchnorm.h>
#include <weft/weft.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

using namespace weft;
namespace F = weft::nn::functional;

namespace {

double median_ms(int iters, const std::function<void()>& fn) {
  fn();  // warm-up: caches, allocator, primitives
  fn();
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

nn::Sequential convbn() {
  return nn::Sequential({nn::Conv2d(3, 32, 3, {.padding = {1, 1}}), nn::BatchNorm2d(32), nn::ReLU(),
                         nn::Conv2d(32, 64, 3, {.padding = {1, 1}}), nn::BatchNorm2d(64),
                         nn::ReLU(), nn::AdaptiveAvgPool2d(1), nn::Flatten(), nn::Linear(64, 10)});
}

}  // namespace

int main(int argc, char** argv) {
  std::string what = argc > 1 ? argv[1] : "shuffle";
  int threads = 1, devices = 2;
  std::string device = "cpu";
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--threads")
      threads = std::atoi(argv[i + 1]);
    else if (a == "--devices")
      devices = std::atoi(argv[i + 1]);
    else if (a == "--device")
      device = argv[i + 1];
  }
  if (what == "shuffle") {
    set_num_threads(threads);
    const bool gpu = device == "cuda";
    if (gpu && !cuda::is_available()) {
      std::fprintf(stderr, "weft_parallel: --device cuda: no usable CUDA device\n");
      return 2;
    }
    const Device dev = gpu ? Device::CUDA(0) : Device::CPU();
    // On the GPU, CUDA events around each call: kernel time, as PyTorch's side measures it,
    // without the launch and synchronisation overheads that would pull copy and shuffle together.
    auto timed = [&](const std::function<Tensor()>& fn) {
      if (gpu) {
        fn();
        cuda::synchronize(0);
        std::vector<double> t;
        for (int i = 0; i < 20; ++i) {
          cuda::Event start(true), end(true);
          start.record(cuda::current_stream(0));
          Tensor y = fn();
          end.record(cuda::current_stream(0));
          end.synchronize();
          t.push_back(start.elapsed_time(end));
        }
        std::sort(t.begin(), t.end());
        return t[t.size() / 2];
      }
      return median_ms(20, [&] { fn(); });
    };
    Tensor x = randn({64, 232, 28, 28}).to(dev);
    const double gb = 2.0 * (double)x.nbytes() / 1e9;  // read + write
    double copy = timed([&] { return x.clone(); });
    double shuffle = timed([&] { return F::channel_shuffle(x, 4); });
    Tensor cl = nn::to_channels_last(x);
    double shuffle_cl = timed([&] { return F::channel_shuffle(cl, 4); });
    std::printf(
        "{\"bench\":\"channel_shuffle\",\"device\":\"%s\",\"threads\":%d,\"copy_gbps\":%.1f,"
        "\"shuffle_gbps\":%.1f,\"ratio\":%.3f,\"channels_last_gbps\":%.1f,"
        "\"channels_last_ratio\":%.3f}\n",
        device.c_str(), threads, gb / copy * 1e3, gb / shuffle * 1e3, copy / shuffle,
        gb / shuffle_cl * 1e3, copy / shuffle_cl);
  } else if (what == "dp") {
    set_num_threads(1);
    manual_seed(0);
    auto model = convbn();
    Tensor x = randn({64, 3, 32, 32});
    Tensor y = randint(0, 10, {64});
    auto step = [&](nn::Module& m) {
      m.zero_grad();
      F::cross_entropy(m.forward(x), y).backward();
    };
    double plain = median_ms(10, [&] { step(*model); });
    std::vector<Device> one{Device::CPU(0)}, many;
    for (int i = 0; i < devices; ++i) many.push_back(Device::CPU(i));
    nn::DataParallel dp1(model.ptr(), {.device_ids = one});
    nn::DataParallel dpk(model.ptr(), {.device_ids = many});
    double d1 = median_ms(10, [&] { step(*dp1); });
    double dk = median_ms(10, [&] { step(*dpk); });
    std::printf(
        "{\"bench\":\"data_parallel_convbn_b64\",\"plain_ms\":%.2f,\"dp1_ms\":%.2f,\"dp1_"
        "overhead\":%.3f,"
        "\"devices\":%d,\"dpk_ms\":%.2f,\"speedup_vs_dp1\":%.2f}\n",
        plain, d1, d1 / plain - 1, devices, dk, d1 / dk);
  } else if (what == "bn") {
    const bool dist_run = std::getenv("WORLD_SIZE") != nullptr;
    if (dist_run) dist::init_process_group();
    set_num_threads(threads);
    // World 1: plain BatchNorm2d, the baseline the target is stated against.
    nn::SyncBatchNorm sbn(232);
    nn::BatchNorm2d bn(232);
    Tensor x = randn({64, 232, 28, 28}).requires_grad_(true);
    Tensor g = randn({64, 232, 28, 28});
    double ms = median_ms(30, [&] {
      x.mutable_grad() = Tensor();
      (dist_run ? sbn(x) : bn(x)).backward(g);
    });
    if (dist::get_rank() == 0)
      std::printf("{\"bench\":\"%s\",\"world\":%d,\"threads\":%d,\"median_ms\":%.2f}\n",
                  dist_run ? "sync_batchnorm_fwd_bwd" : "batchnorm2d_fwd_bwd",
                  dist::get_world_size(), threads, ms);
    if (dist_run) dist::destroy_process_group();
  }
  return 0;
}
