// The model zoo: ShuffleNet unit shapes and channel mixing, and a few training steps whose
// loss falls.
#include <gtest/gtest.h>

#include "weft/models/shufflenet.h"
#include "weft/ops.h"
#include "weft/optim.h"

using namespace weft;

TEST(Models, ShuffleUnitShapes) {
  models::ShuffleUnit down(8, 16, 2), keep(16, 16, 1);
  Tensor y = down(randn({2, 8, 8, 8}));
  EXPECT_EQ(y.sizes(), (Shape{2, 16, 4, 4}));
  EXPECT_EQ(keep(y).sizes(), (Shape{2, 16, 4, 4}));
  EXPECT_THROW(models::ShuffleUnit(8, 16, 1), Error);
  EXPECT_THROW(keep(randn({2, 8, 4, 4})), Error);
  // Depthwise convolutions: groups equal to channels.
  bool depthwise = false;
  for (auto& [n, m] : keep->named_modules())
    if (auto* c = dynamic_cast<nn::Conv2dImpl*>(m.get()))
      depthwise |= c->options.groups == c->in_channels && c->in_channels > 1;
  EXPECT_TRUE(depthwise);
}

TEST(Models, ShuffleNetTrainsAFewSteps) {
  manual_seed(0);
  auto net = models::shufflenet_small(10);
  optim::SGD opt(net->parameters(), {.lr = 0.1, .momentum = 0.9});
  Tensor x = randn({16, 1, 28, 28});
  Tensor y = randint(0, 10, {16});
  float first = 0, last = 0;
  for (int step = 0; step < 8; ++step) {
    opt.zero_grad();
    Tensor loss = nn::functional::cross_entropy(net(x), y);
    loss.backward();
    opt.step();
    if (step == 0) first = loss.item<float>();
    last = loss.item<float>();
  }
  EXPECT_LT(last, first * 0.7f) << "first " << first << " last " << last;
  // The clone used by DataParallel replicas reproduces the network exactly.
  net->eval();
  auto copy = net->clone();
  EXPECT_TRUE(allclose(net(x), copy->forward(x), 0, 0));
}
