// GradScaler on CUDA: the unscale/overflow and scale-update kernels against the CPU path, and a
// scaled CUDA training run against the same run on the CPU.
#include <gtest/gtest.h>

#include <cmath>

#include "../golden.h"
#include "skip_without_cuda.h"
#include "weft/amp.h"
#include "weft/autograd.h"
#include "weft/nn.h"
#include "weft/optim.h"

namespace weft {
namespace {

nn::Sequential make_model() {
  manual_seed(11);
  return nn::Sequential{nn::Linear(16, 32), nn::ReLU(), nn::Linear(32, 4)};
}

// Trains 6 steps on `device`, poisoning a gradient with inf at step 2; returns the parameters
// (on the CPU) and the scale after each step.
std::pair<std::vector<Tensor>, std::vector<double>> run(Device device) {
  nn::Sequential m = make_model();
  m->to(device);
  optim::SGD opt(m->parameters(), {.lr = 0.05, .momentum = 0.9});
  amp::GradScaler scaler({.init_scale = 4096.0, .growth_interval = 2});
  std::vector<double> scales;
  for (int t = 0; t < 6; ++t) {
    manual_seed(50 + t);
    Tensor x = randn({8, 16}).to(device), y = randn({8, 4}).to(device);
    opt.zero_grad();
    scaler.scale(nn::functional::mse_loss(m(x), y)).backward();
    if (t == 2) {
      Tensor g = m->parameters()[0].grad();
      NoGradGuard ng;
      g.narrow(0, 3, 1).fill_(INFINITY);
    }
    EXPECT_EQ(scaler.step(opt), t != 2) << device << " step " << t;
    scaler.update();
    scales.push_back(scaler.get_scale());
  }
  std::vector<Tensor> ps;
  for (auto& p : m->parameters()) ps.push_back(p.detach().to(Device::CPU()));
  return {ps, scales};
}

TEST(CudaGradScaler, MatchesTheCpuRun) {
  SKIP_WITHOUT_CUDA();
  auto [cpu_params, cpu_scales] = run(Device::CPU());
  auto [gpu_params, gpu_scales] = run(Device::CUDA(0));
  EXPECT_EQ(gpu_scales, cpu_scales);
  EXPECT_EQ(cpu_scales, (std::vector<double>{4096, 8192, 4096, 4096, 8192, 8192}));
  for (size_t i = 0; i < cpu_params.size(); ++i)
    EXPECT_TRUE(test::close(gpu_params[i], cpu_params[i], 1e-5, "param " + std::to_string(i)));
}

}  // namespace
}  // namespace weft
