// Modules and losses against PyTorch goldens: outputs, input and parameter gradients,
// BatchNorm running statistics.
#include <nlohmann/json.hpp>

#include "golden.h"
#include "weft/autograd.h"
#include "weft/nn.h"

using namespace weft;
using weft::test::close;
using weft::test::Golden;
using weft::test::kConvRtol;
using weft::test::kRtol;
namespace F = weft::nn::functional;

namespace {

// Loads the golden's param.* into the module, runs forward/backward and compares.
void check_module(const std::string& name, nn::Module& m, double rtol = kRtol, bool train = true) {
  SCOPED_TRACE(name);
  Golden g(name);
  nn::StateDict sd;
  for (const auto& [k, t] : g.tensors)
    if (k.rfind("param.", 0) == 0) sd.insert(k.substr(6), t);
  m.load_state_dict(sd);
  m.train(train);
  Tensor x = g.input(0);
  Tensor out = m.forward(x);
  ASSERT_TRUE(close(out, g["out"], rtol, "out"));
  for (const auto& [k, t] : m.named_buffers())
    if (g.has("after." + k)) {
      if (t.dtype() == kInt64) {
        EXPECT_EQ(t.item<int64_t>(), g["after." + k].item<int64_t>()) << k;
      } else {
        EXPECT_TRUE(close(t, g["after." + k], rtol, "after." + k));
      }
    }
  if (!g.has("gout")) return;
  out.backward(g["gout"]);
  EXPECT_TRUE(close(x.grad(), g["grad.in.0"], rtol, "grad.in.0"));
  for (const auto& [k, p] : m.named_parameters())
    EXPECT_TRUE(close(p.grad(), g["grad.param." + k], rtol, "grad.param." + k));
}

}  // namespace

TEST(GoldenNN, Linear) {
  nn::Linear a(5, 3);
  check_module("linear", *a);
  nn::Linear b(5, 3, false);
  check_module("linear_nobias", *b);
}

TEST(GoldenNN, Conv2d) {
  nn::Conv2d basic(3, 4, 3);
  check_module("conv2d_basic", *basic, kConvRtol);
  nn::Conv2d sp(3, 6, 3, {.stride = {2, 2}, .padding = {1, 1}});
  check_module("conv2d_stride_pad", *sp, kConvRtol);
  nn::Conv2d dil(2, 4, 3, {.padding = {2, 2}, .dilation = {2, 2}});
  check_module("conv2d_dilation", *dil, kConvRtol);
  nn::Conv2d grp(4, 6, 3, {.padding = {1, 1}, .groups = 2, .bias = false});
  check_module("conv2d_groups", *grp, kConvRtol);
  nn::Conv2d dw(4, 4, 3, {.padding = {1, 1}, .groups = 4});
  check_module("conv2d_depthwise", *dw, kConvRtol);
  nn::Conv2d pw(8, 4, 1);
  check_module("conv2d_1x1", *pw, kConvRtol);
  nn::Conv2d wino(16, 16, 3, {.padding = {1, 1}});
  check_module("conv2d_winograd", *wino, kConvRtol);
}

TEST(GoldenNN, BatchNorm) {
  nn::BatchNorm1d b1(4);
  check_module("batchnorm1d_train", *b1);
  nn::BatchNorm1d b13(4);
  check_module("batchnorm1d_3d_train", *b13);
  nn::BatchNorm2d b2(3);
  check_module("batchnorm2d_train", *b2);
  nn::BatchNorm2d b2e(3);
  check_module("batchnorm2d_eval", *b2e, kRtol, /*train=*/false);
  nn::BatchNorm2d na(3, {.affine = false});
  check_module("batchnorm2d_noaffine", *na);
}

TEST(GoldenNN, BatchNormCumulativeMomentum) {
  Golden g("batchnorm2d_momentum_none");
  nn::BatchNorm2d bn(3, {.momentum = std::nullopt});
  nn::StateDict sd;
  for (const auto& [k, t] : g.tensors)
    if (k.rfind("param.", 0) == 0) sd.insert(k.substr(6), t);
  bn->load_state_dict(sd);
  Tensor out;
  for (int i = 0; i < 3; ++i) out = bn(g.input(i, false));
  EXPECT_TRUE(close(out, g["out"], kRtol, "out"));
  EXPECT_TRUE(close(bn->running_mean, g["after.running_mean"], kRtol, "running_mean"));
  EXPECT_TRUE(close(bn->running_var, g["after.running_var"], kRtol, "running_var"));
  EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 3);
}

TEST(GoldenNN, Pooling) {
  nn::MaxPool2d mp(2);
  check_module("maxpool2d", *mp);
  nn::MaxPool2d mpp(3, {.stride = {2, 2}, .padding = {1, 1}});
  check_module("maxpool2d_pad", *mpp);
  nn::AvgPool2d ap(2);
  check_module("avgpool2d", *ap);
  nn::AvgPool2d app(3, {.stride = {2, 2}, .padding = {1, 1}});
  check_module("avgpool2d_pad", *app);
  nn::AdaptiveAvgPool2d aap(1);
  check_module("adaptive_avgpool2d", *aap);
  nn::AdaptiveAvgPool2d aap3(3);
  check_module("adaptive_avgpool2d_3x3", *aap3);
  nn::Flatten fl;
  check_module("flatten", *fl);
}

TEST(GoldenNN, Losses) {
  const std::pair<const char*, F::Reduction> reductions[] = {
      {"mean", F::Reduction::Mean}, {"sum", F::Reduction::Sum}, {"none", F::Reduction::None}};
  for (auto [suffix, red] : reductions) {
    std::vector<std::pair<std::string, std::shared_ptr<nn::LossImpl>>> losses = {
        {"mse", std::make_shared<nn::MSELossImpl>(red)},
        {"bce", std::make_shared<nn::BCELossImpl>(red)},
        {"bce_with_logits", std::make_shared<nn::BCEWithLogitsLossImpl>(red)},
        {"cross_entropy", std::make_shared<nn::CrossEntropyLossImpl>(red)}};
    for (auto& [name, loss] : losses) {
      std::string c = name + "_" + suffix;
      SCOPED_TRACE(c);
      Golden g(c);
      Tensor x = g.input(0);
      Tensor out = loss->forward(x, g.input(1, false));
      ASSERT_TRUE(close(out, g["out"], kRtol, c + " out"));
      out.backward(g["gout"]);
      EXPECT_TRUE(close(x.grad(), g["grad.in.0"], kRtol, c + " grad"));
    }
  }
}

TEST(GoldenNN, LossErrors) {
  Tensor logits = randn({3, 4});
  EXPECT_THROW(F::cross_entropy(logits, tensor(std::vector<int64_t>{0, 4, 1}, {3})), Error);
  EXPECT_THROW(F::cross_entropy(logits, tensor(std::vector<int64_t>{0, 1}, {2})), Error);
  EXPECT_THROW(F::cross_entropy(logits, zeros({3})), Error);  // float target
  EXPECT_THROW(F::mse_loss(randn({3}), randn({4})), Error);
  EXPECT_THROW(F::binary_cross_entropy(full({2}, 1.5), zeros({2})), Error);
  try {
    F::cross_entropy(logits, tensor(std::vector<int64_t>{0, 7, 1}, {3}));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Target 7 is out of bounds"), std::string::npos);
  }
}
