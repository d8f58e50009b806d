// Modules and losses against PyTorch goldens: outputs, input and parameter gradients,
// BatchNorm running statistics.
#include <nlohmann/json.hpp>

#include "error_message.h"
#include "golden.h"
#include "golden_modules.h"
#include "weft/autograd.h"
#include "weft/nn.h"

using namespace weft;
using weft::test::close;
using weft::test::Golden;
using weft::test::kRtol;
namespace F = weft::nn::functional;

TEST(GoldenNN, Modules) {
  for (const auto& c : weft::test::module_cases())
    weft::test::check_module(c.name, *c.make(), c.rtol, c.train);
}

TEST(GoldenNN, BatchNormCumulativeMomentum) {
  Golden g("batchnorm2d_momentum_none");
  nn::BatchNorm2d bn(3, {.momentum = std::nullopt});
  bn->load_state_dict(g.params());
  Tensor out;
  for (int i = 0; i < 3; ++i) out = bn(g.input(i, false));
  EXPECT_TRUE(close(out, g["out"], kRtol, "out"));
  EXPECT_TRUE(close(bn->running_mean, g["after.running_mean"], kRtol, "running_mean"));
  EXPECT_TRUE(close(bn->running_var, g["after.running_var"], kRtol, "running_var"));
  EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 3);
}

TEST(GoldenNN, Losses) {
  for (const auto& [name, loss] : weft::test::loss_cases()) {
    SCOPED_TRACE(name);
    Golden g(name);
    Tensor x = g.input(0);
    Tensor out = loss->forward(x, g.input(1, false));
    ASSERT_TRUE(close(out, g["out"], kRtol, name + " out"));
    out.backward(g["gout"]);
    EXPECT_TRUE(close(x.grad(), g["grad.in.0"], kRtol, name + " grad"));
  }
}

TEST(GoldenNN, LossErrors) {
  Tensor logits = randn({3, 4});
  EXPECT_THROW(F::cross_entropy(logits, tensor(std::vector<int64_t>{0, 4, 1}, {3})), Error);
  EXPECT_THROW(F::cross_entropy(logits, tensor(std::vector<int64_t>{0, 1}, {2})), Error);
  EXPECT_THROW(F::cross_entropy(logits, zeros({3})), Error);  // float target
  EXPECT_THROW(F::mse_loss(randn({3}), randn({4})), Error);
  EXPECT_THROW(F::binary_cross_entropy(full({2}, 1.5), zeros({2})), Error);
  // An input outside [0, 1] must be refused.
  std::string m = test::error_message([&] {
    F::binary_cross_entropy(tensor(std::vector<float>{0.5f, -0.25f, 1.5f}, {3}), zeros({3}));
  });
  EXPECT_NE(m.find("found values in [-0.25, 1.5]"), std::string::npos) << m;
  m = test::error_message([&] {
    F::cross_entropy(logits, tensor(std::vector<int64_t>{0, 7, 1}, {3}));
  });
  EXPECT_NE(m.find("Target 7 is out of bounds"), std::string::npos) << m;
}
