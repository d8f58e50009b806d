// bf16 tensors and amp::autocast against PyTorch: every op on bf16 inputs (golden bf16_ops: float
// math, results rounded to bf16), a conv net trained under CPU autocast (golden autocast_cpu_bf16),
// and autocast's rules against a second implementation (the same ops with explicit casts).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "bf16_golden.h"
#include "error_message.h"
#include "weft/amp.h"
#include "weft/autograd.h"
#include "weft/nn.h"
#include "weft/nn/parallel/data_parallel.h"
#include "weft/optim.h"

namespace weft {
namespace {

using namespace test;

TEST(Bf16Ops, MatchPyTorch) { check_ops_against_golden(Device::CPU()); }

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

// The one-pass 16-bit loops (same-shape contiguous operands) against the widened path (float32
// kernels on widened copies, each result rounded once), which strided operands take: bit for
// bit, forward and backward, on tensors large enough to be split across threads.
TEST(Bf16Ops, OnePassLoopsEqualWidenedPath) {
  using Fn = std::function<Tensor(const Tensor&, const Tensor&)>;
  const std::vector<std::pair<const char*, Fn>> ops = {
      {"mul", [](const Tensor& x, const Tensor& y) { return x * y; }},
      {"add", [](const Tensor& x, const Tensor& y) { return x + y; }},
      {"sub", [](const Tensor& x, const Tensor& y) { return x - y; }},
      {"sigmoid", [](const Tensor& x, const Tensor&) { return x.sigmoid(); }},
      {"tanh", [](const Tensor& x, const Tensor&) { return x.tanh(); }},
      {"relu", [](const Tensor& x, const Tensor&) { return x.relu(); }},
      {"exp", [](const Tensor& x, const Tensor&) { return x.exp(); }},
      {"scale", [](const Tensor& x, const Tensor&) { return x * 0.3; }},
  };
  for (DType dt : {kBF16, DType::Float16})
    for (const auto& [name, op] : ops) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " " + name);
      manual_seed(11);
      Tensor a = randn({150, 300}).to(dt).requires_grad_();
      Tensor b = randn({150, 300}).to(dt).requires_grad_();
      Tensor gout = randn({150, 300}).to(dt);
      // The same values held transposed: [300, 150] leaves seen through .t() are strided.
      Tensor at = a.detach().t().contiguous().requires_grad_();
      Tensor bt = b.detach().t().contiguous().requires_grad_();
      Tensor y1 = op(a, b), y2 = op(at.t(), bt.t());
      y1.backward(gout);
      y2.backward(gout);
      EXPECT_TRUE(bit_equal(y1, y2.contiguous()));
      EXPECT_TRUE(bit_equal(a.grad(), at.grad().t().contiguous()));
      if (b.grad().defined()) {
        EXPECT_TRUE(bit_equal(b.grad(), bt.grad().t().contiguous()));
      }
    }
}

// Batch norm on a 16-bit input with float32 parameters (the CPU kernels' native path) against
// the widened path, which a 16-bit weight holding the same values takes: bit for bit, output,
// input gradient, parameter gradients (rounded as the widened path rounds them) and running
// statistics, in training and eval mode, for long rows (widened one at a time) and short ones.
TEST(Bf16Ops, BatchNormNativeEqualsWidened) {
  for (DType dt : {kBF16, DType::Float16})
    for (Shape shape : {Shape{4, 3, 8, 9}, Shape{6, 5, 7}})
      for (bool training : {true, false}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " " + shape_str(shape) +
                     (training ? " train" : " eval"));
        manual_seed(5);
        const int64_t C = shape[1];
        Tensor x = (randn(shape) * 2.0 + 0.5).to(dt);
        Tensor w16 = (rand({C}) + 0.5).to(dt), b16 = randn({C}).to(dt);
        Tensor gout = randn(shape).to(dt);
        Tensor stats = rand({2, C}) + 0.5;
        std::vector<Tensor> out, gx, gw, gb, rm;
        for (bool native : {true, false}) {
          Tensor xi = x.clone().requires_grad_();
          Tensor w = native ? w16.to(kFloat32) : w16.clone();
          Tensor b = native ? b16.to(kFloat32) : b16.clone();
          w.requires_grad_();
          b.requires_grad_();
          Tensor run_mean = stats[0].clone(), run_var = stats[1].clone();
          Tensor y = F::batch_norm(xi, run_mean, run_var, w, b, training, 0.1, 1e-5);
          y.backward(gout);
          out.push_back(y);
          gx.push_back(xi.grad());
          gw.push_back(w.grad().to(dt));
          gb.push_back(b.grad().to(dt));
          rm.push_back(cat({run_mean, run_var}));
        }
        EXPECT_EQ(out[0].dtype(), dt);
        EXPECT_EQ(gx[0].dtype(), dt);
        EXPECT_TRUE(bit_equal(out[0], out[1]));
        EXPECT_TRUE(bit_equal(gx[0], gx[1]));
        EXPECT_TRUE(bit_equal(gw[0], gw[1]));
        EXPECT_TRUE(bit_equal(gb[0], gb[1]));
        EXPECT_TRUE(bit_equal(rm[0], rm[1]));
      }
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

// PyTorch refuses products of mixed dtypes (outside autocast); so does weft, naming both.
TEST(Bf16Ops, MixedDtypeProductsAreClearErrors) {
  Tensor x = randn({2, 3}).to(kBF16), w = randn({4, 3}), b = randn({4});
  const auto message = test::error_message;
  const std::string lin = message([&] { F::linear(x, w, b); });
  EXPECT_NE(lin.find("linear: expected input, weight and bias of one dtype"), std::string::npos)
      << lin;
  EXPECT_NE(lin.find("bfloat16"), std::string::npos) << lin;
  const std::string conv = message([&] {
    F::conv2d(randn({1, 3, 4, 4}).to(kBF16), randn({2, 3, 3, 3}), Tensor());
  });
  EXPECT_NE(conv.find("conv2d: expected input, weight and bias of one dtype"), std::string::npos)
      << conv;
  const std::string mat = message([&] { matmul(x, w.transpose(0, 1)); });
  EXPECT_NE(mat.find("matmul: expected both tensors to have the same dtype"), std::string::npos)
      << mat;
}

TEST(Bf16Ops, ModuleToDtypeKeepsIdentity) {
  manual_seed(9);
  nn::Sequential m{nn::Conv2d(3, 4, 3), nn::BatchNorm2d(4), nn::ReLU(), nn::Flatten(),
                   nn::Linear(4 * 4 * 4, 2)};
  const nn::StateDict before = m->state_dict();
  Tensor handle = m->parameters()[0];  // an optimizer or replica would hold this
  m->to(kBF16);
  EXPECT_EQ(handle.dtype(), kBF16);
  for (const auto& [k, v] : m->state_dict()) {
    if (!is_floating_point(before.at(k).dtype())) {
      EXPECT_EQ(v.dtype(), kInt64) << k;  // num_batches_tracked stays
      continue;
    }
    EXPECT_TRUE(bit_equal(v, before.at(k).to(kBF16))) << k;
  }
  Tensor y = m(randn({2, 3, 6, 6}).to(kBF16));
  EXPECT_EQ(y.dtype(), kBF16);
  // The bf16 running statistics received the training step's update.
  Tensor rm = m->state_dict().at("1.running_mean");
  EXPECT_EQ(rm.dtype(), kBF16);
  EXPECT_FALSE(bit_equal(rm, zeros({4}, {.dtype = kBF16})));
  y.sum().backward();
  EXPECT_EQ(handle.grad().dtype(), kBF16);
  optim::SGD opt(m->parameters(), {.lr = 0.1});
  EXPECT_THROW(opt.step(), Error);  // weft's optimizers step float32 parameters only
  m->to(kFloat32);
  EXPECT_EQ(handle.dtype(), kFloat32);
  EXPECT_EQ(handle.grad().dtype(), kFloat32);
  EXPECT_THROW(m->to(kInt64), Error);
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
  // A float32 seed for a bf16 root is cast to it, as PyTorch's engine does.
  Tensor leaf3 = x.clone().requires_grad_(true);
  Tensor out3 = leaf3 * 2.0;
  out3.backward(full({4, 3}, 1.0 / 3));
  EXPECT_EQ(leaf3.grad().dtype(), kBF16);
  EXPECT_TRUE(bit_equal(leaf3.grad(), (full({4, 3}, 1.0 / 3).to(kBF16) * 2.0)));
  EXPECT_THROW(mm(x, y, false, true), Error);  // mixed dtypes in a matrix product
}

TEST(Autocast, CpuTrainingMatchesPyTorch) { check_autocast_training(Device::CPU()); }

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
