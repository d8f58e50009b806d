// Shared by the CPU and CUDA tests of bf16 and autocast (test_autocast.cpp,
// cuda/test_cuda_autocast.cpp): PyTorch's goldens bf16_ops and autocast_cpu_bf16 replayed on a
// device, with the tolerances their comparisons need and why.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "golden.h"
#include "weft/amp.h"
#include "weft/nn.h"
#include "weft/optim.h"

namespace weft::test {

namespace F = nn::functional;

constexpr DType kBF16 = DType::BFloat16;
// One bf16 ulp relative (8 significant bits): PyTorch and weft both compute in float and round
// once, but their float results may sit on either side of a rounding boundary.
constexpr double kUlp = 1.0 / 128;

// Gradients of matrix products compare against the largest entry: PyTorch 1.13's CPU bf16
// matrix-product backward accumulates partly in bf16 (its entries sit up to 0.5% of the largest
// away from the float32 product, which weft rounds once), so entries that cancel differ by more
// than their own ulps.
inline ::testing::AssertionResult close_normwise(const Tensor& actual, const Tensor& expected,
                                                 double tol, const std::string& what) {
  double largest = 0;
  for (float v : expected.to_vector_float()) largest = std::max(largest, (double)std::fabs(v));
  const double r = max_rel_diff(actual, expected, tol, tol * largest);
  if (r <= 1.0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": error " << r * tol << " of the largest entry "
                                       << largest << " exceeds " << tol;
}

// A training run under autocast against PyTorch's: the largest difference from PyTorch's bf16
// run must stay within twice what bf16 itself changes there (PyTorch's float32 run against its
// bf16 run), or within an ulp of the largest entry where that is smaller.
inline ::testing::AssertionResult within_bf16_noise(const Tensor& actual, const Tensor& bf16_run,
                                                    const Tensor& fp32_run,
                                                    const std::string& what) {
  const auto a = actual.to_vector_float(), b = bf16_run.to_vector_float(),
             f = fp32_run.to_vector_float();
  if (a.size() != b.size()) return ::testing::AssertionFailure() << what << ": sizes differ";
  double largest = 0, noise = 0, err = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    largest = std::max(largest, (double)std::fabs(b[i]));
    noise = std::max(noise, (double)std::fabs(f[i] - b[i]));
    err = std::max(err, (double)std::fabs(a[i] - b[i]));
  }
  if (err <= std::max(2 * noise, kUlp * largest)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": differs from PyTorch's bf16 run by " << err
         << ", while its float32 run differs by " << noise << " (largest entry " << largest << ")";
}

inline bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.sizes() == b.sizes() &&
         a.to_vector_float() == b.to_vector_float();
}

// Runs every op of golden bf16_ops on `device`: outputs and gradients against PyTorch's CPU ones.
inline void check_ops_against_golden(Device device) {
  Golden g("bf16_ops");
  using Op = std::function<Tensor(const std::vector<Tensor>&)>;
  const std::vector<std::pair<std::string, Op>> ops = {
      {"add", [](auto& v) { return v[0] + v[1]; }},
      {"mul_f32", [](auto& v) { return v[0] * v[1]; }},
      {"mul_scalar", [](auto& v) { return v[0] * 0.3; }},
      {"div", [](auto& v) { return v[0] / v[1]; }},
      {"relu", [](auto& v) { return v[0].relu(); }},
      {"sigmoid", [](auto& v) { return v[0].sigmoid(); }},
      {"tanh", [](auto& v) { return v[0].tanh(); }},
      {"exp", [](auto& v) { return v[0].exp(); }},
      {"sum_dim", [](auto& v) { return v[0].sum({1}); }},
      {"mean_dim", [](auto& v) { return v[0].mean({1}); }},
      {"max_dim", [](auto& v) { return v[0].max(1).first; }},
      {"log_softmax", [](auto& v) { return v[0].log_softmax(1); }},
      {"linear", [](auto& v) { return F::linear(v[0], v[1], v[2]); }},
      {"conv2d",
       [](auto& v) {
         return F::conv2d(v[0], v[1], v[2], {1, 1}, {1, 1});
       }},
      {"batch_norm",
       [](auto& v) {
         return F::batch_norm(v[0], Tensor(), Tensor(), v[1], v[2], true, 0.1, 1e-5);
       }},
      {"max_pool2d",
       [](auto& v) {
         return F::max_pool2d(v[0], {2, 2}, {2, 2});
       }},
      {"adaptive_avg_pool2d",
       [](auto& v) {
         return F::adaptive_avg_pool2d(v[0], {1, 1});
       }},
      {"bce_with_logits", [](auto& v) { return F::binary_cross_entropy_with_logits(v[0], v[1]); }},
      {"cross_entropy", [](auto& v) { return F::cross_entropy(v[0], v[1]); }},
  };
  for (const auto& [name, op] : ops) {
    SCOPED_TRACE(name);
    std::vector<Tensor> in;
    for (int i = 0; g.has(name + ".in." + std::to_string(i)); ++i) {
      Tensor t = g[name + ".in." + std::to_string(i)].to(device);
      if (is_floating_point(t.dtype())) t.requires_grad_(true);
      in.push_back(t);
    }
    Tensor out;
    ASSERT_NO_THROW(out = op(in));
    const Tensor want = g[name + ".out"];
    ASSERT_EQ(out.dtype(), want.dtype());
    ASSERT_EQ(out.device(), device);
    const bool product = name == "linear" || name == "conv2d";
    EXPECT_TRUE(product ? close_normwise(out, want, kUlp, "out") : close(out, want, kUlp, "out"));
    ASSERT_NO_THROW(out.backward(g[name + ".gout"].to(device)));
    for (size_t i = 0; i < in.size(); ++i) {
      const std::string key = name + ".grad." + std::to_string(i);
      if (!g.has(key)) continue;
      ASSERT_EQ(in[i].grad().dtype(), in[i].dtype()) << key;
      if (product)
        EXPECT_TRUE(close_normwise(in[i].grad(), g[key], kUlp, key));
      else  // float formulas on the same rounded tensors: within an ulp
        EXPECT_TRUE(close(in[i].grad(), g[key], kUlp, key));
    }
  }
}

inline nn::Sequential golden_net() {
  return nn::Sequential{nn::Conv2d(3, 8, 3, {.padding = {1, 1}}),
                        nn::BatchNorm2d(8),
                        nn::ReLU(),
                        nn::MaxPool2d(2),
                        nn::Flatten(),
                        nn::Linear(8 * 4 * 4, 5)};
}

// Golden autocast_cpu_bf16's training run with the model on `device`, under a bf16 autocast
// region of that device's type.
inline void check_autocast_training(Device device) {
  Golden g("autocast_cpu_bf16");
  nn::Sequential model = golden_net();
  model->load_state_dict(g.params());
  model->to(device);
  optim::SGD opt(model->parameters(), {.lr = 0.05, .momentum = 0.9});
  std::vector<float> losses;
  for (int t = 0; t < 4; ++t) {
    const std::string s = std::to_string(t);
    opt.zero_grad();
    Tensor logits, loss;
    {
      amp::autocast region(device.type, kBF16);
      logits = model(g["in." + s].to(device));
      loss = F::cross_entropy(logits, g["target." + s].to(device));
    }
    ASSERT_EQ(logits.dtype(), kBF16);
    ASSERT_EQ(loss.dtype(), kFloat32);
    if (t == 0) {
      EXPECT_TRUE(close(logits, g["logits.0"], kUlp, "logits"));
    }
    loss.backward();
    for (const auto& [k, p] : model->named_parameters()) {
      if (t != 0) break;
      ASSERT_EQ(p.grad().dtype(), kFloat32) << k;
      EXPECT_TRUE(
          within_bf16_noise(p.grad(), g["grad.0." + k], g["grad_fp32.0." + k], "grad " + k));
    }
    opt.step();
    losses.push_back(loss.item<float>());
  }
  EXPECT_TRUE(close(tensor(losses, {4}), g["loss"], kUlp, "losses"));
  for (const auto& [k, v] : model->state_dict()) {
    if (v.dtype() != kFloat32) continue;  // num_batches_tracked
    EXPECT_TRUE(within_bf16_noise(v, g["after." + k], g["after_fp32." + k], "after " + k));
  }
}

}  // namespace weft::test
