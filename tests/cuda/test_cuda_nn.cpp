// nn on CUDA: the PyTorch goldens of the CPU tests (same files) rerun on GPU 0 for convolution
// (cuDNN), Linear (cuBLAS), BatchNorm, pooling and the losses; a few SGD steps of a conv + BN +
// pool + linear model compared between CPU and CUDA; DataParallel over the GPUs and DDP at world
// 1 (NCCL) against the plain model. Each test skips without a device.
#include <gtest/gtest.h>

#include "../golden.h"
#include "../golden_modules.h"
#include "../subprocess.h"
#include "skip_without_cuda.h"
#include "weft/cuda.h"
#include "weft/dist/distributed.h"
#include "weft/nn.h"
#include "weft/nn/parallel/data_parallel.h"
#include "weft/nn/parallel/distributed_data_parallel.h"
#include "weft/nn/sync_batchnorm.h"
#include "weft/optim/sgd.h"

using namespace weft;
using weft::test::close;
using weft::test::Golden;
using weft::test::kRtol;

namespace {

const Device kGpu = Device::CUDA(0);
Tensor host(const Tensor& t) { return t.to(Device::CPU()); }

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
