// Autograd's saved-tensor version check, case by case as PyTorch 1.13 behaves (each case was run
// there): a backward that would read a tensor written in place after the forward fails with an
// error naming it; writes to tensors the backward does not read stay allowed.
#include <gtest/gtest.h>

#include <string>

#include "error_message.h"
#include "weft/autograd.h"
#include "weft/nn.h"
#include "weft/ops.h"
#include "weft/optim.h"

namespace weft {
namespace {

void expect_inplace_error(Tensor loss, const char* node) {
  // A backward that uses a tensor modified in place must fail.
  const std::string m = test::error_message([&] { loss.backward(); });
  EXPECT_NE(m.find("modified by an inplace operation"), std::string::npos) << m;
  EXPECT_NE(m.find(node), std::string::npos) << m;
}

TEST(VersionCounter, CountsInPlaceWritesSharedByViews) {
  Tensor t = zeros({4});
  Tensor v = t.narrow(0, 1, 2);
  const uint32_t v0 = t._version();
  EXPECT_EQ(v._version(), v0);
  v.fill_(1);
  EXPECT_EQ(t._version(), v0 + 1);
  EXPECT_EQ(v._version(), v0 + 1);
  t.add_(1);
  t.mul_(2.0);
  t.copy_(ones({4}));
  EXPECT_EQ(v._version(), v0 + 4);
  EXPECT_EQ(t.detach()._version(), v0 + 4);  // detach shares the memory, so the counter
  Tensor c = t.clone();
  const uint32_t c0 = c._version();
  t.add_(1);
  EXPECT_EQ(c._version(), c0) << "a clone has a counter of its own";
}

TEST(VersionCounter, SavedInputWrittenInPlace) {
  Tensor w = randn({3}).requires_grad_(true), x = randn({3});
  Tensor y = (w * x).sum();
  x.mul_(2.0);
  expect_inplace_error(y, "MulBackward");
}

TEST(VersionCounter, UnsavedInputMayChange) {
  Tensor w = randn({3}).requires_grad_(true), x = randn({3});
  Tensor y = (w + x).sum();  // add's backward reads neither operand
  x.add_(1);
  y.backward();
  EXPECT_EQ(w.grad().to_vector_float(), (std::vector<float>{1, 1, 1}));
}

TEST(VersionCounter, SavedOutputWrittenInPlace) {
  Tensor w = randn({3}).requires_grad_(true);
  Tensor y = w.exp();
  Tensor z = y.sum();
  {
    NoGradGuard ng;
    y.mul_(2.0);
  }
  expect_inplace_error(z, "ExpBackward");
  // log's backward reads its input, not its output.
  Tensor l = w.abs().log();
  Tensor s = l.sum();
  {
    NoGradGuard ng;
    l.mul_(2.0);
  }
  s.backward();
}

TEST(VersionCounter, OptimizerStepBeforeBackward) {
  nn::Linear lin(3, 2);
  optim::SGD opt(lin->parameters(), {.lr = 0.1});
  Tensor x = randn({4, 3}).requires_grad_(true);
  lin(x).sum().backward();
  Tensor out = lin(x).sum();
  opt.step();  // rewrites the weight that the pending backward multiplies by
  expect_inplace_error(out, "AddmmBackward");
}

TEST(VersionCounter, LoadStateDictBeforeBackward) {
  nn::Conv2d conv(2, 3, 3);
  Tensor x = randn({1, 2, 5, 5}).requires_grad_(true);
  Tensor out = conv(x).sum();
  conv->load_state_dict(conv->state_dict());  // copies into the parameters in place
  expect_inplace_error(out, "ConvolutionBackward");
}

TEST(VersionCounter, BatchNormInputWrittenInPlace) {
  nn::BatchNorm2d bn(3);
  Tensor x = randn({4, 3, 2, 2});
  Tensor out = (bn(x) * bn(x)).sum();
  x.mul_(2.0);
  expect_inplace_error(out, "BatchNormBackward");
}

}  // namespace
}  // namespace weft
