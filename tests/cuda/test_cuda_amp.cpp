// GradScaler on CUDA: the unscale/overflow and scale-update kernels against the CPU path, and a
// scaled CUDA training run against the same run on the CPU.
#include <gtest/gtest.h>

#include <cmath>

#include "cuda_test.h"
#include "golden.h"
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

// The device's float32 <-> bfloat16/float16 conversions give the CPU's (and so PyTorch's) values,
// NaN payloads aside, both ways.
void expect_same_values(const Tensor& a, const Tensor& b, const std::string& what) {
  const std::vector<float> va = a.to_vector_float(), vb = b.to_vector_float();
  ASSERT_EQ(va.size(), vb.size()) << what;
  for (size_t k = 0; k < va.size(); ++k)
    EXPECT_TRUE(va[k] == vb[k] || (std::isnan(va[k]) && std::isnan(vb[k])))
        << what << " element " << k << ": " << va[k] << " vs " << vb[k];
}

TEST(CudaHalfCasts, MatchTheCpu) {
  SKIP_WITHOUT_CUDA();
  test::Golden g("half_casts");
  const Device gpu = Device::CUDA(0), cpu = Device::CPU();
  for (DType half : {DType::BFloat16, DType::Float16}) {
    const std::string name = dtype_name(half);
    expect_same_values(g["x"].to(gpu).to(half).to(cpu), g["x"].to(half), "narrowing to " + name);
    const Tensor golden = g[half == DType::BFloat16 ? "x.bf16" : "x.f16"];
    expect_same_values(golden.to(gpu).to(kFloat32).to(cpu), golden.to(kFloat32),
                       "widening from " + name);
  }
}

}  // namespace
}  // namespace weft
