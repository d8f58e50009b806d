// bf16 tensors and amp::autocast against PyTorch: every op on bf16 inputs (golden bf16_ops: float
// math, results rounded to bf16), a conv net trained under CPU autocast (golden autocast_cpu_bf16),
// and autocast's rules against a second implementation (the same ops with explicit casts).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "golden.h"
#include "weft/amp.h"
#include "weft/autograd.h"
#include "weft/nn.h"
#include "weft/nn/parallel/data_parallel.h"
#include "weft/optim.h"

namespace weft {
namespace {

namespace F = nn::functional;
using test::close;
using test::Golden;

constexpr DType kBF16 = DType::BFloat16;
// One bf16 ulp relative (8 significant bits): PyTorch and weft both compute in float and round
// once, but their float results may sit on either side of a rounding boundary.
constexpr double kUlp = 1.0 / 128;

// Gradients of matrix products compare against the largest entry: PyTorch 1.13's CPU bf16
// matrix-product backward accumulates partly in bf16 (its entries sit up to 0.5% of the largest
// away from the float32 product, which weft rounds once), so entries that cancel differ by more
// than their own ulps.
::testing::AssertionResult close_normwise(const Tensor& actual, const Tensor& expected, double tol,
                                          const std::string& what) {
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
::testing::AssertionResult within_bf16_noise(const Tensor& actual, const Tensor& bf16_run,
                                             const Tensor& fp32_run, const std::string& what) {
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

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.sizes() == b.sizes() &&
         a.to_vector_float() == b.to_vector_float();
}

using Op = std::function<Tensor(const std::vector<Tensor>&)>;

TEST(Bf16Ops, MatchPyTorch) {
  Golden g("bf16_ops");
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
      Tensor t = g[name + ".in." + std::to_string(i)].clone();
      if (is_floating_point(t.dtype())) t.requires_grad_(true);
      in.push_back(t);
    }
    Tensor out;
    ASSERT_NO_THROW(out = op(in));
    const Tensor want = g[name + ".out"];
    ASSERT_EQ(out.dtype(), want.dtype());
    EXPECT_TRUE(close(out, want, kUlp, "out"));
    ASSERT_NO_THROW(out.backward(g[name + ".gout"]));
    for (size_t i = 0; i < in.size(); ++i) {
      const std::string key = name + ".grad." + std::to_string(i);
      if (!g.has(key)) continue;
      ASSERT_EQ(in[i].grad().dtype(), in[i].dtype()) << key;
      if (name == "linear" || name == "conv2d")
        EXPECT_TRUE(close_normwise(in[i].grad(), g[key], kUlp, key));
      else  // float formulas on the same rounded tensors: within an ulp
        EXPECT_TRUE(close(in[i].grad(), g[key], kUlp, key));
    }
  }
}

TEST(Bf16Ops, ComputeInFloatAndRoundOnce) {
  // A second implementation: the float32 op on widened copies, rounded. bit for bit.
  manual_seed(3);
  Tensor a = randn({5, 7}).to(kBF16), b = randn({7}).to(kBF16);
  EXPECT_TRUE(bit_equal(a * b, (a.to(kFloat32) * b.to(kFloat32)).to(kBF16)));
  EXPECT_TRUE(bit_equal(a.sigmoid(), a.to(kFloat32).sigmoid().to(kBF16)));
  EXPECT_TRUE(
      bit_equal(mm(a, a, false, true), mm(a.to(kFloat32), a.to(kFloat32), false, true).to(kBF16)));
  EXPECT_TRUE(bit_equal(F::mse_loss(a, a * 0.5),
                        F::mse_loss(a.to(kFloat32), (a * 0.5).to(kFloat32)).to(kBF16)));
  // The mean is PyTorch's CPU one: the sum rounded, then divided.
  EXPECT_TRUE(bit_equal(a.mean(), a.sum() / 35.0));
}

TEST(Bf16Ops, TypePromotion) {
  Tensor bf = ones({3}, {.dtype = kBF16}), f16 = ones({3}, {.dtype = DType::Float16});
  Tensor f32 = ones({3}), i64 = ones({3}, {.dtype = kInt64});
  EXPECT_EQ((bf + bf).dtype(), kBF16);
  EXPECT_EQ((bf + f32).dtype(), kFloat32);
  EXPECT_EQ((f32 * bf).dtype(), kFloat32);
  EXPECT_EQ((bf + f16).dtype(), kFloat32);
  EXPECT_EQ((bf * i64).dtype(), kBF16);
  // A 0-dim tensor decides only when of a higher category (PyTorch's rule).
  EXPECT_EQ((bf * scalar_tensor(2.0)).dtype(), kBF16);
  EXPECT_EQ((i64 + scalar_tensor(2.0, {.dtype = kBF16})).dtype(), kBF16);
  EXPECT_EQ(result_type(f32, scalar_tensor(1.0, {.dtype = kBF16})), kFloat32);
  // 1 + 2^-8 is not a bf16: the float32 sum keeps it, a bf16 sum rounds it away.
  Tensor small = full({3}, 1.0 / 256, {.dtype = kBF16});
  EXPECT_EQ((bf + small).to(kFloat32).to_vector_float()[0], 1.0f);
  EXPECT_EQ((f32 + small).to_vector_float()[0], 1.0f + 1.0f / 256);
}

TEST(Bf16Ops, InPlaceAndGradientDtypes) {
  manual_seed(4);
  Tensor x = randn({4, 3}).to(kBF16), y = randn({4, 3});
  Tensor want = (x.to(kFloat32) + y * 0.5).to(kBF16);
  Tensor z = x.clone();
  z.add_(y, 0.5);
  EXPECT_TRUE(bit_equal(z, want));
  Tensor f = y.clone();
  f.add_(x);  // float32 += bf16, as PyTorch allows
  EXPECT_TRUE(bit_equal(f, y + x.to(kFloat32)));
  // A bf16 leaf gets a bf16 gradient, also through an op that promotes to float32; a bf16 root
  // is seeded with bf16 ones.
  Tensor leaf = x.clone().requires_grad_(true);
  (leaf * y).sum().backward();
  EXPECT_EQ(leaf.grad().dtype(), kBF16);
  EXPECT_TRUE(bit_equal(leaf.grad(), y.to(kBF16)));
  Tensor leaf2 = x.clone().requires_grad_(true);
  Tensor root = (leaf2 * 3.0).sum();
  ASSERT_EQ(root.dtype(), kBF16);
  root.backward();
  EXPECT_TRUE(bit_equal(leaf2.grad(), full({4, 3}, 3.0, {.dtype = kBF16})));
  EXPECT_THROW(mm(x, y, false, true), Error);  // mixed dtypes in a matrix product
}

nn::Sequential golden_net() {
  return nn::Sequential{nn::Conv2d(3, 8, 3, {.padding = {1, 1}}),
                        nn::BatchNorm2d(8),
                        nn::ReLU(),
                        nn::MaxPool2d(2),
                        nn::Flatten(),
                        nn::Linear(8 * 4 * 4, 5)};
}

TEST(Autocast, CpuTrainingMatchesPyTorch) {
  Golden g("autocast_cpu_bf16");
  nn::Sequential model = golden_net();
  model->load_state_dict(g.params());
  optim::SGD opt(model->parameters(), {.lr = 0.05, .momentum = 0.9});
  std::vector<float> losses;
  for (int t = 0; t < 4; ++t) {
    const std::string s = std::to_string(t);
    opt.zero_grad();
    Tensor logits, loss;
    {
      amp::autocast region(DeviceType::CPU);
      logits = model(g["in." + s]);
      loss = F::cross_entropy(logits, g["target." + s]);
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

TEST(Autocast, CastsAsPyTorchLists) {
  manual_seed(5);
  nn::Linear fc(6, 4);
  Tensor x = randn({3, 6}), img = randn({2, 3, 5, 5}), cw = randn({4, 3, 3, 3});
  Tensor target = randint(0, 4, {3});
  Tensor out;
  {
    amp::autocast region(DeviceType::CPU);
    EXPECT_TRUE(amp::is_autocast_enabled(DeviceType::CPU));
    EXPECT_FALSE(amp::is_autocast_enabled(DeviceType::CUDA));
    EXPECT_EQ(amp::get_autocast_dtype(DeviceType::CPU), kBF16);
    out = fc(x);
    EXPECT_EQ(out.dtype(), kBF16);
    // The second implementation: explicit casts of every argument.
    EXPECT_TRUE(bit_equal(out, F::linear(x.to(kBF16), fc->weight.to(kBF16), fc->bias.to(kBF16))));
    EXPECT_EQ(mm(x, x, false, true).dtype(), kBF16);
    EXPECT_EQ(matmul(x, x.transpose(0, 1)).dtype(), kBF16);
    EXPECT_TRUE(bit_equal(F::conv2d(img, cw), F::conv2d(img.to(kBF16), cw.to(kBF16))));
    EXPECT_EQ(out.relu().dtype(), kBF16);                    // on no list: the input's dtype
    EXPECT_EQ((out + x.narrow(1, 0, 4)).dtype(), kFloat32);  // promotion, as outside
    Tensor ce = F::cross_entropy(out, target);
    EXPECT_EQ(ce.dtype(), kFloat32);  // losses are on the float32 list
    EXPECT_TRUE(bit_equal(ce, F::cross_entropy(out.to(kFloat32), target)));
    EXPECT_EQ(F::mse_loss(out, out * 0.5).dtype(), kFloat32);
    EXPECT_EQ(F::binary_cross_entropy(out.sigmoid(), (out * 0.0).sigmoid()).dtype(), kFloat32);
    {
      amp::autocast off(DeviceType::CPU, std::nullopt, false);
      EXPECT_EQ(fc(x).dtype(), kFloat32);
      {
        amp::autocast half(DeviceType::CPU, DType::Float16);
        EXPECT_EQ(fc(x).dtype(), DType::Float16);
      }
      EXPECT_EQ(fc(x).dtype(), kFloat32);
    }
    EXPECT_EQ(fc(x).dtype(), kBF16);
    // Only CPU regions touch CPU tensors.
    amp::autocast gpu(DeviceType::CUDA);
    EXPECT_EQ(fc(x).dtype(), kBF16);
  }
  EXPECT_FALSE(amp::is_autocast_enabled(DeviceType::CPU));
  EXPECT_EQ(fc(x).dtype(), kFloat32);
  EXPECT_THROW(amp::autocast(DeviceType::CPU, kFloat32), Error);
  // Backward ran outside the region: float32 gradients for float32 parameters.
  out.sum().backward();
  EXPECT_EQ(fc->weight.grad().dtype(), kFloat32);
  EXPECT_TRUE(bit_equal(fc->weight.grad(), fc->weight.grad().to(kBF16).to(kFloat32)))
      << "the weight gradient is a bf16 product, widened";
}

TEST(Autocast, BackwardInsideRegionRunsAsOutside) {
  manual_seed(6);
  nn::Linear fc(5, 3);
  Tensor x = randn({4, 5}), y = randn({4, 3});
  Tensor outside_loss;
  {
    amp::autocast region(DeviceType::CPU);
    outside_loss = F::mse_loss(fc(x), y);
  }
  outside_loss.backward();
  Tensor outside = fc->weight.grad().clone();
  fc->weight.mutable_grad() = Tensor();
  {
    amp::autocast region(DeviceType::CPU);
    F::mse_loss(fc(x), y).backward();  // its formulas must not be autocast again
  }
  EXPECT_TRUE(bit_equal(fc->weight.grad(), outside));
}

TEST(Autocast, CachesWeightCastsWithinRegion) {
  manual_seed(8);
  nn::Linear fc(5, 3);
  const auto lower = [](const Tensor& t) {
    return amp::autocast_cast(t, amp::CastPolicy::LowerPrecision);
  };
  Tensor first;
  {
    amp::autocast region(DeviceType::CPU);
    first = lower(fc->weight);
    EXPECT_EQ(lower(fc->weight).impl(), first.impl());
    Tensor act = randn({2, 5});  // not a weight: cast afresh each time
    EXPECT_NE(lower(act).impl(), lower(act).impl());
    {
      NoGradGuard ng;
      fc->weight.mul_(2.0);  // an in-place update makes the cached cast stale
    }
    Tensor second = lower(fc->weight);
    EXPECT_NE(second.impl(), first.impl());
    EXPECT_TRUE(bit_equal(second, fc->weight.to(kBF16)));
    // A weight used twice through its one cached cast gets both gradients.
    Tensor x1 = randn({2, 5}), x2 = randn({2, 5});
    (fc(x1).sum() + fc(x2).sum()).backward();
    Tensor g = ones({2, 3}, {.dtype = kBF16});
    Tensor want = mm(g, x1.to(kBF16), true, false) + mm(g, x2.to(kBF16), true, false);
    EXPECT_TRUE(bit_equal(fc->weight.grad(), want.to(kFloat32)));
  }
  amp::autocast again(DeviceType::CPU);  // the cache went with the region
  EXPECT_NE(lower(fc->weight).impl(), first.impl());
}

TEST(Autocast, DataParallelReplicasRunInTheRegion) {
  manual_seed(7);
  nn::Linear plain(6, 4);
  auto src = plain->clone();
  nn::DataParallel dp(src, {.device_ids = {Device::CPU(0), Device::CPU(1)}});
  Tensor x = randn({8, 6});
  amp::autocast region(DeviceType::CPU);
  Tensor a = dp(x), b = plain(x);
  EXPECT_EQ(a.dtype(), kBF16);
  EXPECT_TRUE(bit_equal(a, b));
}

}  // namespace
}  // namespace weft
