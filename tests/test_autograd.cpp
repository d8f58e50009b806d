// Autograd engine: accumulation, retain_graph, NoGradGuard, detach, hooks, and every op's
// backward against finite differences.
#include <gtest/gtest.h>

#include "error_message.h"
#include "gradcheck.h"
#include "weft/autograd.h"
#include "weft/nn/functional.h"
#include "weft/ops.h"

using namespace weft;
using weft::test::gradcheck;
namespace F = weft::nn::functional;

TEST(Autograd, SimpleChainAndAccumulation) {
  Tensor x = tensor(std::vector<float>{1, 2, 3}, {3}, {.requires_grad = true});
  Tensor y = (x * x).sum();  // dy/dx = 2x
  y.backward();
  EXPECT_EQ(x.grad().to_vector_float(), (std::vector<float>{2, 4, 6}));
  (x * 3.0).sum().backward();  // accumulates
  EXPECT_EQ(x.grad().to_vector_float(), (std::vector<float>{5, 7, 9}));
}

TEST(Autograd, ExplicitGradientArgument) {
  Tensor x = ones({2, 2}, {.requires_grad = true});
  Tensor y = x * 2.0;
  y.backward(tensor(std::vector<float>{1, 2, 3, 4}, {2, 2}));
  EXPECT_EQ(x.grad().to_vector_float(), (std::vector<float>{2, 4, 6, 8}));
  Tensor z = x * 2.0;
  EXPECT_THROW(z.backward(), Error);           // non-scalar needs a gradient
  EXPECT_THROW(z.backward(ones({3})), Error);  // wrong shape
}

TEST(Autograd, SecondBackwardNeedsRetainGraph) {
  Tensor x = ones({3}, {.requires_grad = true});
  Tensor y = (x.exp() * x).sum();
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();
  EXPECT_NEAR(x.grad().to_vector_float()[0], 2 * 2 * std::exp(1.0), 1e-5);
  // A second backward without retain_graph must fail.
  const std::string m = test::error_message([&] { y.backward(); });
  EXPECT_NE(m.find("second time"), std::string::npos) << m;
}

TEST(Autograd, NoGradAndDetach) {
  Tensor x = ones({2}, {.requires_grad = true});
  {
    NoGradGuard ng;
    Tensor y = x * 2.0;
    EXPECT_FALSE(y.requires_grad());
  }
  Tensor d = x.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_THROW((d * 2.0).sum().backward(), Error);
  Tensor y = x * 2.0;
  EXPECT_TRUE(y.requires_grad());
  EXPECT_FALSE(y.is_leaf());
  EXPECT_THROW(arange(3).requires_grad_(), Error);  // int64 cannot require grad
}

TEST(Autograd, DiamondGraphSumsPaths) {
  Tensor x = full({1}, 3.0, {.requires_grad = true});
  Tensor a = x * 2.0, b = x * x;
  (a + b).sum().backward();  // d/dx (2x + x^2) = 2 + 2x = 8
  EXPECT_FLOAT_EQ(x.grad().item<float>(), 8.0f);
}

TEST(Autograd, PostAccumulateGradHookFiresOnceWithFullGradient) {
  Tensor w = ones({2}, {.requires_grad = true});
  Tensor v = ones({2}, {.requires_grad = true});
  std::vector<std::string> order;
  std::vector<float> seen;
  w.register_post_accumulate_grad_hook([&](Tensor& t) {
    order.push_back("w");
    seen.push_back(t.grad().sum().item<float>());
  });
  int id = v.register_post_accumulate_grad_hook([&](Tensor&) { order.push_back("v"); });
  // w used twice: the hook must see the sum of both paths, once.
  Tensor h = (w * 2.0 + w * 3.0) * v;
  h.sum().backward();
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(seen, (std::vector<float>{10.0f}));
  // The hook fires again in the next backward, with the accumulated gradient.
  v.remove_post_accumulate_grad_hook(id);
  order.clear();
  (w * v).sum().backward();
  EXPECT_EQ(order, (std::vector<std::string>{"w"}));
  EXPECT_EQ(seen.back(), 12.0f);
  EXPECT_THROW((w * 2.0).register_post_accumulate_grad_hook([](Tensor&) {}), Error);
}

TEST(Autograd, HooksFireInReverseOrderOfUse) {
  // A chain x -> l1 -> l2 -> l3: gradients become ready for l3's weight first.
  std::vector<Tensor> ws;
  for (int i = 0; i < 3; ++i) ws.push_back(full({1}, 1.0 + i, {.requires_grad = true}));
  std::vector<int> order;
  for (int i = 0; i < 3; ++i)
    ws[i].register_post_accumulate_grad_hook([&, i](Tensor&) { order.push_back(i); });
  Tensor h = ones({1});
  for (auto& w : ws) h = (h * w).tanh();
  h.sum().backward();
  EXPECT_EQ(order, (std::vector<int>{2, 1, 0}));
}

TEST(Autograd, GradcheckElementwise) {
  Tensor a = randn({3, 4}), b = randn({4}), pos = rand({3, 4}) + 0.5;
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0] + x[1]; }, {a, b}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0] - x[1]; }, {a, b}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0] * x[1]; }, {a, b}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0] / x[1]; }, {a, pos}));
  EXPECT_TRUE(gradcheck([](auto& x) { return 2.0 / x[0] - 1.0; }, {pos}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].exp(); }, {a}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].log(); }, {pos}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].sqrt(); }, {pos}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].pow(3.0); }, {pos}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].sigmoid(); }, {a}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].tanh(); }, {a}));
  EXPECT_TRUE(gradcheck([](auto& x) { return -x[0]; }, {a}));
  // relu/abs/clamp away from their kinks
  Tensor away = (rand({3, 4}) + 0.1) * (randint(0, 2, {3, 4}).to(kFloat32) * 2.0 - 1.0);
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].relu(); }, {away}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].abs(); }, {away}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].clamp(-0.05, 0.05); }, {away}));
}

TEST(Autograd, GradcheckReductionsAndShapes) {
  Tensor a = randn({2, 3, 4});
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].sum({1}); }, {a}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].mean({0, 2}, true); }, {a}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].max(2).first; }, {a}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].softmax(1); }, {a}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].log_softmax(2); }, {a}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].permute({2, 0, 1}).contiguous(); }, {a}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].slice(2, 1, 4, 2); }, {a}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].select(1, 2); }, {a}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].narrow(0, 1, 1).reshape({12}); }, {a}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].unsqueeze(1).expand({2, 5, 3, 4}); }, {a}));
  EXPECT_TRUE(gradcheck([](auto& x) { return cat({x[0], x[0] * 2.0}, 1); }, {a}));
  EXPECT_TRUE(gradcheck([](auto& x) { return stack({x[0], x[0]}, 3); }, {a}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].chunk(2, 2)[1]; }, {a}));
  EXPECT_TRUE(gradcheck([](auto& x) { return x[0].flatten(1); }, {a}));
}

TEST(Autograd, GradcheckMatmul) {
  EXPECT_TRUE(
      gradcheck([](auto& x) { return matmul(x[0], x[1]); }, {randn({3, 4}), randn({4, 2})}));
  EXPECT_TRUE(
      gradcheck([](auto& x) { return matmul(x[0], x[1].t()); }, {randn({3, 4}), randn({2, 4})}));
  EXPECT_TRUE(
      gradcheck([](auto& x) { return matmul(x[0], x[1]); }, {randn({2, 3, 4}), randn({2, 4, 2})}));
  EXPECT_TRUE(
      gradcheck([](auto& x) { return matmul(x[0], x[1]); }, {randn({2, 3, 4}), randn({4, 2})}));
  EXPECT_TRUE(gradcheck([](auto& x) { return matmul(x[0], x[1]); }, {randn({4}), randn({4, 2})}));
}

TEST(Autograd, GradcheckNNFunctional) {
  EXPECT_TRUE(gradcheck([](auto& x) { return F::linear(x[0], x[1], x[2]); },
                        {randn({3, 4}), randn({2, 4}), randn({2})}));
  EXPECT_TRUE(gradcheck(
      [](auto& x) {
        return F::conv2d(x[0], x[1], x[2], {2, 1}, {1, 1}, {1, 2}, 2);
      },
      {randn({2, 4, 5, 6}), randn({6, 2, 3, 3}), randn({6})}));
  EXPECT_TRUE(gradcheck([](auto& x) { return F::conv2d(x[0], x[1]); },
                        {randn({1, 3, 4, 4}), randn({2, 3, 1, 1})}));
  EXPECT_TRUE(gradcheck(
      [](auto& x) { return F::batch_norm(x[0], Tensor(), Tensor(), x[1], x[2], true, 0.1, 1e-5); },
      {randn({4, 3, 2, 2}), randn({3}), randn({3})}, 1e-2, 5e-2));
  EXPECT_TRUE(gradcheck(
      [](auto& x) {
        return F::max_pool2d(x[0], {2, 2}, {2, 2});
      },
      {randn({2, 2, 4, 4})}));
  EXPECT_TRUE(gradcheck(
      [](auto& x) {
        return F::avg_pool2d(x[0], {3, 3}, {2, 2}, {1, 1});
      },
      {randn({1, 2, 5, 5})}));
  EXPECT_TRUE(gradcheck(
      [](auto& x) {
        return F::adaptive_avg_pool2d(x[0], {3, 2});
      },
      {randn({1, 2, 7, 5})}));
  Tensor target = tensor(std::vector<int64_t>{0, 2, 1}, {3});
  EXPECT_TRUE(gradcheck([&](auto& x) { return F::cross_entropy(x[0], target); }, {randn({3, 4})}));
  EXPECT_TRUE(
      gradcheck([](auto& x) { return F::mse_loss(x[0], x[1]); }, {randn({3, 2}), randn({3, 2})}));
  EXPECT_TRUE(gradcheck([](auto& x) { return F::binary_cross_entropy_with_logits(x[0], x[1]); },
                        {randn({5}), rand({5})}));
  EXPECT_TRUE(gradcheck([](auto& x) { return F::binary_cross_entropy(x[0], x[1]); },
                        {rand({5}) * 0.8 + 0.1, rand({5})}, 1e-3));
}

// Note [Gradient into the parameter's memory]: a marked leaf's weight gradient is written over
// its values by linear's backward where that is safe, and is the gradient an unmarked copy gets.
namespace {
struct LinearGrads {
  Tensor x, w, b;
};
LinearGrads linear_leaves(bool mark) {
  Generator g(11);
  LinearGrads l{randn({5, 3}, &g), randn({4, 3}, &g), randn({4}, &g)};
  for (Tensor* t : {&l.x, &l.w, &l.b}) t->requires_grad_(true);
  if (mark) autograd::set_gradient_overwrites_values(l.w, true);
  return l;
}
Tensor weights_of(const Tensor& t) { return tensor(t.detach().to_vector_float(), t.sizes()); }
}  // namespace

TEST(Autograd, MarkedWeightGetsItsGradientInItsOwnMemory) {
  LinearGrads ref = linear_leaves(false), got = linear_leaves(true);
  Tensor c = randn({5, 4});
  (F::linear(ref.x, ref.w, ref.b) * c).sum().backward();
  const void* values = got.w.device_ptr();
  (F::linear(got.x, got.w, got.b) * c).sum().backward();
  EXPECT_EQ(got.w.grad().device_ptr(), values);  // in place: no weight-sized buffer
  EXPECT_TRUE(allclose(got.w.grad(), ref.w.grad(), 1e-6, 1e-6));
  EXPECT_TRUE(allclose(got.w.detach(), ref.w.grad(), 1e-6, 1e-6));  // the values are gone
  // The input gradient was computed from the values before they were overwritten.
  EXPECT_TRUE(allclose(got.x.grad(), ref.x.grad(), 1e-6, 1e-6));
  EXPECT_TRUE(allclose(got.b.grad(), ref.b.grad(), 1e-6, 1e-6));
}

TEST(Autograd, MarkedWeightKeepsItsValuesWhereBackwardStillNeedsThem) {
  Tensor c = randn({5, 4});
  auto run = [&](LinearGrads& l, int variant) {
    if (variant == 0) {  // used twice: its accumulator gets two gradients
      (F::linear(F::linear(l.x, l.w, l.b).narrow(1, 0, 3), l.w, l.b) * c).sum().backward();
    } else if (variant == 1) {  // the graph is retained for another backward
      (F::linear(l.x, l.w, l.b) * c).sum().backward(Tensor(), true);
    } else {  // a .grad is already there to accumulate into
      (F::linear(l.x, l.w, l.b) * c).sum().backward();
    }
  };
  for (int variant : {0, 1, 2}) {
    LinearGrads ref = linear_leaves(false), got = linear_leaves(true);
    if (variant == 2) {  // a .grad from an earlier step
      ref.w.mutable_grad() = zeros({4, 3});
      got.w.mutable_grad() = zeros({4, 3});
    }
    Tensor before = weights_of(got.w);
    run(ref, variant);
    run(got, variant);
    EXPECT_TRUE(allclose(got.w.detach(), before, 0, 0)) << "variant " << variant;
    EXPECT_TRUE(allclose(got.w.grad(), ref.w.grad(), 1e-6, 1e-6)) << "variant " << variant;
    EXPECT_TRUE(allclose(got.x.grad(), ref.x.grad(), 1e-6, 1e-6)) << "variant " << variant;
  }
}

// Note [Gradient into a destination]: linear's backward writes the weight gradient, times the
// destination's scale, into the place its owner named; the .grad is that place, the values are
// untouched, and the bits are those of the unscaled gradient times a power-of-two scale.
TEST(Autograd, WeightGradientGoesIntoItsDestinationScaled) {
  LinearGrads ref = linear_leaves(false), got = linear_leaves(false);
  Tensor c = randn({5, 4});
  (F::linear(ref.x, ref.w, ref.b) * c).sum().backward();
  Tensor dest = zeros({4, 3}), before = weights_of(got.w);
  autograd::set_gradient_destination(got.w, dest, 0.25f);
  (F::linear(got.x, got.w, got.b) * c).sum().backward();
  EXPECT_TRUE(autograd::gradient_went_to_destination(got.w));
  EXPECT_EQ(got.w.grad().device_ptr(), dest.device_ptr());
  EXPECT_TRUE(allclose(dest, ref.w.grad() * 0.25, 0, 0));  // exact: a power of two
  EXPECT_TRUE(allclose(got.w.detach(), before, 0, 0));
  EXPECT_TRUE(allclose(got.x.grad(), ref.x.grad(), 1e-6, 1e-6));
  EXPECT_TRUE(allclose(got.b.grad(), ref.b.grad(), 0, 0));  // the bias has no destination
  EXPECT_FALSE(autograd::gradient_went_to_destination(got.b));
  // Removing it resets the flag; the next gradient accumulates into the .grad as usual.
  autograd::set_gradient_destination(got.w, Tensor());
  EXPECT_FALSE(autograd::gradient_went_to_destination(got.w));
  (F::linear(got.x, got.w, got.b) * c).sum().backward();
  EXPECT_TRUE(allclose(got.w.grad(), ref.w.grad() * 1.25, 1e-6, 1e-6));
}

TEST(Autograd, WeightGradientSkipsItsDestinationWhereItMustAccumulate) {
  Tensor c = randn({5, 4});
  for (int variant : {0, 1}) {
    LinearGrads ref = linear_leaves(false), got = linear_leaves(false);
    Tensor dest = zeros({4, 3});
    autograd::set_gradient_destination(got.w, dest, 0.5f);
    if (variant == 1) {  // a .grad from an earlier step
      ref.w.mutable_grad() = ones({4, 3});
      got.w.mutable_grad() = ones({4, 3});
    }
    for (LinearGrads* l : {&ref, &got}) {
      Tensor h = F::linear(l->x, l->w, l->b);
      // Variant 0 uses the weight twice: its accumulator gets two gradients.
      if (variant == 0) h = F::linear(h.narrow(1, 0, 3), l->w, l->b);
      (h * c).sum().backward();
    }
    EXPECT_FALSE(autograd::gradient_went_to_destination(got.w)) << "variant " << variant;
    EXPECT_TRUE(allclose(dest, zeros({4, 3}), 0, 0)) << "variant " << variant;
    EXPECT_TRUE(allclose(got.w.grad(), ref.w.grad(), 1e-6, 1e-6)) << "variant " << variant;
  }
}

TEST(Autograd, GradientDestinationMustMatchTheLeaf) {
  LinearGrads l = linear_leaves(false);
  EXPECT_THROW(autograd::set_gradient_destination(l.w, zeros({3, 4})), Error);
  EXPECT_THROW(autograd::set_gradient_destination(l.w, zeros({4, 3}, {.dtype = kInt64})), Error);
  EXPECT_THROW(autograd::set_gradient_destination(l.w, l.w.detach()), Error);  // its own memory
  EXPECT_THROW(autograd::set_gradient_destination(l.w * 2, zeros({4, 3})), Error);  // no leaf
}
