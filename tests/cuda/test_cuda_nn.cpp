// nn on CUDA: the PyTorch goldens of the CPU tests (same files) rerun on GPU 0 for convolution
// (cuDNN), Linear (cuBLAS), BatchNorm, pooling and the losses; a few SGD steps of a conv + BN +
// pool + linear model compared between CPU and CUDA; DataParallel over the GPUs and DDP at world
// 1 (NCCL) against the plain model; SyncBatchNorm's on-device combination of the replicas'
// statistics, and its forward and backward over simulated ranks. Each test skips without a device.
#include <gtest/gtest.h>

#include "cuda_test.h"
#include "golden.h"
#include "golden_modules.h"
#include "subprocess.h"
#include "sync_bn_replay.h"
#include "weft/autograd.h"
#include "weft/cuda.h"
#include "weft/distributed/distributed.h"
#include "weft/nn.h"
#include "weft/nn/batch_norm_kernels.h"
#include "weft/nn/parallel/data_parallel.h"
#include "weft/nn/parallel/distributed_data_parallel.h"
#include "weft/nn/sync_batchnorm.h"
#include "weft/optim/sgd.h"

using namespace weft;
using weft::test::close;
using weft::test::Golden;
using weft::test::kRtol;

namespace {

using weft::test::host;
using weft::test::kGpu;

}  // namespace

TEST(CudaGoldenNN, Modules) {
  SKIP_WITHOUT_CUDA();
  for (const auto& c : weft::test::module_cases())
    weft::test::check_module(c.name, *c.make(), c.rtol, c.train, kGpu);
  nn::SyncBatchNorm sbn(3);  // no process group: BatchNorm on the GPU too
  weft::test::check_module("batchnorm2d_train", *sbn, kRtol, true, kGpu);
}

TEST(CudaGoldenNN, Losses) {
  SKIP_WITHOUT_CUDA();
  for (const auto& [name, loss] : weft::test::loss_cases()) {
    SCOPED_TRACE(name + " on cuda:0");
    Golden g(name);
    Tensor x = g.input(0, false).to(kGpu).requires_grad_(true);
    Tensor out = loss->forward(x, g.input(1, false).to(kGpu));
    ASSERT_TRUE(close(host(out), g["out"], kRtol, name + " out"));
    out.backward(g["gout"].to(kGpu));
    EXPECT_TRUE(close(host(x.grad()), g["grad.in.0"], kRtol, name + " grad"));
  }
  Tensor logits = randn({3, 4}).to(kGpu);
  EXPECT_THROW(
      nn::functional::cross_entropy(logits, tensor(std::vector<int64_t>{0, 4, 1}, {3}).to(kGpu)),
      Error);
}

TEST(CudaNN, TrainingStepsMatchCpu) {
  SKIP_WITHOUT_CUDA();
  // Conv-BN-ReLU-MaxPool-Conv-BN-ReLU-AdaptiveAvgPool-Linear, 3 SGD steps with momentum on the
  // same data from the same initial weights: parameters and running stats agree.
  auto make = [] {
    manual_seed(5);
    return nn::Sequential{nn::Conv2d(3, 8, 3, {.padding = {1, 1}}),
                          nn::BatchNorm2d(8),
                          nn::ReLU(),
                          nn::MaxPool2d(2),
                          nn::Conv2d(8, 16, 3, {.padding = {1, 1}}),
                          nn::BatchNorm2d(16),
                          nn::ReLU(),
                          nn::AdaptiveAvgPool2d(1),
                          nn::Flatten(),
                          nn::Linear(16, 5)};
  };
  nn::Sequential cpu_model = make(), gpu_model = make();
  gpu_model->to(kGpu);
  optim::SGD cpu_opt(cpu_model->parameters(), {.lr = 0.1, .momentum = 0.9});
  optim::SGD gpu_opt(gpu_model->parameters(), {.lr = 0.1, .momentum = 0.9});
  Generator gen(9);
  for (int step = 0; step < 3; ++step) {
    Tensor x = randn({6, 3, 12, 12}, &gen);
    Tensor y = randint(0, 5, {6}, &gen);
    for (auto* pair : {&cpu_model, &gpu_model}) {
      const bool gpu = pair == &gpu_model;
      auto& opt = gpu ? gpu_opt : cpu_opt;
      opt.zero_grad();
      Tensor out = (*pair)->forward(gpu ? x.to(kGpu) : x);
      nn::functional::cross_entropy(out, gpu ? y.to(kGpu) : y).backward();
      opt.step();
    }
  }
  auto cpu_state = cpu_model->state_dict(), gpu_state = gpu_model->state_dict();
  for (const auto& [k, t] : cpu_state) {
    if (t.dtype() == kInt64) continue;
    EXPECT_TRUE(close(host(gpu_state.at(k)), t, 1e-4, k));
  }
}

TEST(CudaNN, DataParallelOverGpusMatchesPlainModel) {
  SKIP_WITHOUT_CUDA();
  if (cuda::device_count() < 2)
    GTEST_SKIP() << "DataParallel over one GPU calls the module itself: nothing to compare";
  // Every visible GPU (replicas beyond GPU 0 get their parameters by one coalesced copy each):
  // outputs and gradients equal the plain model's on GPU 0.
  auto make = [] {
    manual_seed(3);
    return nn::Sequential{nn::Conv2d(3, 8, 3, {.padding = {1, 1}}), nn::ReLU(),
                          nn::AdaptiveAvgPool2d(1), nn::Flatten(), nn::Linear(8, 4)};
  };
  nn::Sequential plain = make(), wrapped_model = make();
  plain->to(kGpu);
  wrapped_model->to(kGpu);
  nn::DataParallel dp(wrapped_model.ptr());
  Generator gen(4);
  Tensor x = randn({8, 3, 10, 10}, &gen).to(kGpu);
  Tensor y0 = plain->forward(x), y1 = dp->forward(x);
  ASSERT_EQ(y1.device(), kGpu);
  EXPECT_TRUE(close(host(y1), host(y0), 1e-5, "output"));
  y0.sum().backward();
  y1.sum().backward();
  auto p0 = plain->named_parameters(), p1 = wrapped_model->named_parameters();
  ASSERT_EQ(p0.size(), p1.size());
  for (size_t i = 0; i < p0.size(); ++i)
    EXPECT_TRUE(
        close(host(p1[i].second.grad()), host(p0[i].second.grad()), 1e-5, "grad " + p0[i].first));
}

TEST(CudaNN, DistributedDataParallelWorldOneMatchesPlainModel) {
  SKIP_WITHOUT_CUDA();
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  setenv("MASTER_PORT", std::to_string(weft::test::free_port()).c_str(), 1);
  dist::init_process_group({.backend = "nccl", .world_size = 1, .rank = 0});
  auto make = [] {
    manual_seed(6);
    return nn::Sequential{nn::Linear(6, 16), nn::ReLU(), nn::Linear(16, 3)};
  };
  nn::Sequential plain = make(), inner = make();
  plain->to(kGpu);
  inner->to(kGpu);
  nn::DistributedDataParallel ddp(inner.ptr(), {.bucket_cap_mb = 1});
  optim::SGD o0(plain->parameters(), {.lr = 0.1, .momentum = 0.9});
  optim::SGD o1(inner->parameters(), {.lr = 0.1, .momentum = 0.9});
  Generator gen(2);
  for (int step = 0; step < 3; ++step) {
    Tensor x = randn({5, 6}, &gen).to(kGpu);
    o0.zero_grad();
    o1.zero_grad();
    plain->forward(x).pow(2).sum().backward();
    ddp->forward(x).pow(2).sum().backward();
    o0.step();
    o1.step();
  }
  auto p0 = plain->named_parameters(), p1 = inner->named_parameters();
  ASSERT_EQ(p0.size(), p1.size());
  for (size_t i = 0; i < p0.size(); ++i)
    EXPECT_TRUE(close(host(p1[i].second), host(p0[i].second), 1e-6, p0[i].first));
  dist::destroy_process_group();
}

TEST(CudaNN, BatchNormCountsBatchesOnTheDevice) {
  SKIP_WITHOUT_CUDA();
  // num_batches_tracked is counted on the GPU; with momentum unset (cumulative average) the
  // factor comes from it: three steps agree with the CPU's.
  for (std::optional<double> momentum : {std::optional<double>(0.1), std::optional<double>()}) {
    nn::BatchNorm1d cpu(4, {.momentum = momentum}), gpu(4, {.momentum = momentum});
    gpu->to(kGpu);
    Generator gen(8);
    for (int step = 0; step < 3; ++step) {
      Tensor x = randn({5, 4, 2}, &gen);
      cpu(x);
      gpu(x.to(kGpu));
    }
    EXPECT_EQ(host(gpu->num_batches_tracked).item<int64_t>(), 3);
    EXPECT_TRUE(close(host(gpu->running_mean), cpu->running_mean, 1e-5, "running_mean"));
    EXPECT_TRUE(close(host(gpu->running_var), cpu->running_var, 1e-5, "running_var"));
  }
}

namespace {

// One replica's statistics row as SyncBatchNorm all-gathers it, built on the host.
Tensor host_row(int64_t count, const Tensor& mean, const Tensor& var) {
  return cat({tensor(std::vector<float>{(float)(count >> 24), (float)(count & 0xffffff)}, {2}),
              host(mean), host(var)});
}

}  // namespace

TEST(CudaNN, SyncBatchNormGatherStatsMatchesHostChan) {
  SKIP_WITHOUT_CUDA();
  // Six replicas with unequal counts, among them 0, 1 and one above 2^24 (both float halves
  // used): the CUDA kernel equals the host's Chan combination in double and the textbook
  // formula; the count stays an int64 tensor on the device.
  const int64_t C = 5;
  const std::vector<int64_t> counts{5, 0, 1, (int64_t(3) << 24) + 12345, 2, 0};
  Generator gen(3);
  std::vector<Tensor> rows;
  for (int64_t n : counts)
    rows.push_back(host_row(n, randn({C}, &gen) * 3.0, rand({C}, &gen) * 2.0));
  Tensor all = stack(rows);
  auto cpu = nn::detail::combine_channel_stats(all);
  auto gpu = nn::detail::combine_channel_stats(all.to(kGpu));
  ASSERT_TRUE(gpu.device_count.defined());
  EXPECT_EQ(gpu.device_count.device(), kGpu);
  EXPECT_EQ(gpu.device_count.dtype(), kInt64);
  int64_t total = 0;
  for (int64_t n : counts) total += n;
  EXPECT_EQ(cpu.count, total);
  EXPECT_EQ(host(gpu.device_count).item<int64_t>(), total);
  EXPECT_TRUE(close(host(gpu.mean), cpu.mean, 1e-6, "mean vs host Chan"));
  EXPECT_TRUE(close(host(gpu.var), cpu.var, 1e-6, "var vs host Chan"));
  // sum n_i mean_i / N and sum n_i (var_i + (mean_i - mean)^2) / N, in double.
  std::vector<float> want_mean(C), want_var(C);
  for (int64_t c = 0; c < C; ++c) {
    double s = 0, q = 0;
    for (size_t r = 0; r < counts.size(); ++r)
      s += counts[r] * (double)rows[r][2 + c].item<float>();
    const double mu = s / (double)total;
    for (size_t r = 0; r < counts.size(); ++r) {
      const double d = rows[r][2 + c].item<float>() - mu;
      q += counts[r] * ((double)rows[r][2 + C + c].item<float>() + d * d);
    }
    want_mean[c] = (float)mu;
    want_var[c] = (float)(q / (double)total);
  }
  EXPECT_TRUE(close(host(gpu.mean), tensor(want_mean, {C}), 1e-5, "mean vs formula"));
  EXPECT_TRUE(close(host(gpu.var), tensor(want_var, {C}), 1e-5, "var vs formula"));

  // The overloads that read the count on the device equal those given it by the host.
  Tensor rm0 = randn({C}, &gen).to(kGpu), rv0 = rand({C}, &gen).to(kGpu);
  Tensor rm1 = rm0.clone(), rv1 = rv0.clone();
  nn::detail::update_running_stats(rm0, rv0, gpu.mean, gpu.var, total, 0.1);
  nn::detail::update_running_stats(rm1, rv1, gpu.mean, gpu.var, gpu.device_count, 0.1);
  EXPECT_TRUE(allclose(host(rm1), host(rm0), 0, 0));
  EXPECT_TRUE(allclose(host(rv1), host(rv0), 0, 0));
  Tensor x = randn({4, C, 3}, &gen).to(kGpu), dy = randn({4, C, 3}, &gen).to(kGpu);
  Tensor invstd = (gpu.var + 1e-5).pow(-0.5), w = randn({C}, &gen).to(kGpu);
  auto [s1, s2] = nn::detail::batch_norm_backward_reduce(dy, x, gpu.mean);
  Tensor dx0 = nn::detail::batch_norm_backward_elemt(dy, x, gpu.mean, invstd, w, s1, s2, total);
  Tensor dx1 =
      nn::detail::batch_norm_backward_elemt(dy, x, gpu.mean, invstd, w, s1, s2, gpu.device_count);
  EXPECT_TRUE(allclose(host(dx1), host(dx0), 0, 0));

  // Every replica empty: zeros and a zero count, as on the host.
  Tensor empty_rows = stack({host_row(0, ones({C}), ones({C})), host_row(0, ones({C}), ones({C}))});
  auto none = nn::detail::combine_channel_stats(empty_rows.to(kGpu));
  EXPECT_EQ(host(none.device_count).item<int64_t>(), 0);
  EXPECT_TRUE(allclose(host(none.mean), zeros({C}), 0, 0));
  EXPECT_TRUE(allclose(host(none.var), zeros({C}), 0, 0));
}

TEST(CudaNN, SyncBatchNormReplayedRanksMatchCpuBatchNormOnWholeBatch) {
  SKIP_WITHOUT_CUDA();
  // The combination, running statistics and backward read the count on the device.
  test::check_replayed_ranks(kGpu);
  const int64_t C = 3;

  // One value per channel and no other replica: refused before any communication. With other
  // replicas the global count is on the device and not checked (PyTorch's rule).
  auto alone = std::make_shared<test::ReplaySync>();
  alone->rows = {host_row(1, zeros({C}), zeros({C})).to(kGpu)};
  Tensor one = randn({1, C}).to(kGpu);
  EXPECT_THROW(nn::functional::sync_batch_norm(one, Tensor(), Tensor(), Tensor(), Tensor(), 0.1,
                                               1e-5, *alone),
               Error);
}
