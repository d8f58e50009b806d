// nn::Module machinery: registration order, state_dict round trips and their errors,
// deep clone, train/eval, zero_grad, apply, default initialisation ranges.
#include <gtest/gtest.h>

#include <cmath>

#include "error_message.h"
#include "weft/autograd.h"
#include "weft/nn.h"
#include "weft/ops.h"

using namespace weft;

namespace {
nn::Sequential make_net() {
  return nn::Sequential({nn::Conv2d(1, 4, 3, {.padding = {1, 1}}), nn::BatchNorm2d(4), nn::ReLU(),
                         nn::AdaptiveAvgPool2d(1), nn::Flatten(), nn::Linear(4, 3)});
}
std::vector<std::string> names(const std::vector<std::pair<std::string, Tensor>>& v) {
  std::vector<std::string> out;
  for (auto& [n, t] : v) out.push_back(n);
  return out;
}
}  // namespace

TEST(Module, NamesInRegistrationOrder) {
  auto net = make_net();
  EXPECT_EQ(
      names(net->named_parameters()),
      (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "5.weight", "5.bias"}));
  EXPECT_EQ(names(net->named_buffers()),
            (std::vector<std::string>{"1.running_mean", "1.running_var", "1.num_batches_tracked"}));
  EXPECT_EQ(net->state_dict().keys().size(), 9u);
  EXPECT_EQ(net->children().size(), 6u);
  EXPECT_EQ(net->named_modules().size(), 7u);
  EXPECT_NE(net->repr().find("Conv2d(1, 4, kernel_size=(3, 3)"), std::string::npos) << net->repr();
}

TEST(Module, StateDictRoundTripAndErrors) {
  manual_seed(1);
  auto a = make_net();
  manual_seed(2);
  auto b = make_net();
  Tensor x = randn({2, 1, 5, 5});
  a->eval();
  b->eval();
  EXPECT_FALSE(allclose(a(x), b(x)));
  b->load_state_dict(a->state_dict());
  EXPECT_TRUE(allclose(a(x), b(x), 0, 0));

  nn::StateDict sd = a->state_dict();
  sd.erase("5.bias");
  std::string m = test::error_message([&] { b->load_state_dict(sd); });
  EXPECT_NE(m.find("Missing key(s): \"5.bias\""), std::string::npos) << m;
  auto res = b->load_state_dict(sd, /*strict=*/false);
  EXPECT_EQ(res.missing_keys, (std::vector<std::string>{"5.bias"}));
  sd = a->state_dict();
  sd.insert("extra", zeros({1}));
  EXPECT_THROW(b->load_state_dict(sd), Error);
  EXPECT_EQ(b->load_state_dict(sd, false).unexpected_keys, (std::vector<std::string>{"extra"}));
  sd = a->state_dict();
  sd["5.weight"] = zeros({2, 4});
  m = test::error_message([&] { b->load_state_dict(sd, false); });
  EXPECT_NE(m.find("5.weight"), std::string::npos) << m;
  EXPECT_NE(m.find("(2, 4)"), std::string::npos) << m;
  EXPECT_NE(m.find("(3, 4)"), std::string::npos) << m;
}

TEST(Module, ModulePrefixHelpers) {
  auto a = make_net();
  nn::StateDict prefixed = nn::add_module_prefix(a->state_dict());
  EXPECT_TRUE(prefixed.contains("module.0.weight"));
  const std::string m = test::error_message([&] { a->load_state_dict(prefixed); });
  EXPECT_NE(m.find("strip_module_prefix"), std::string::npos) << m;
  a->load_state_dict(nn::strip_module_prefix(prefixed));
}

TEST(Module, CloneIsDeepAndEqual) {
  auto a = make_net();
  a->eval();
  auto c = std::dynamic_pointer_cast<nn::SequentialImpl>(a->clone());
  ASSERT_TRUE(c);
  EXPECT_FALSE(c->is_training());
  Tensor x = randn({2, 1, 5, 5});
  EXPECT_TRUE(allclose(a(x), c->forward(x), 0, 0));
  auto pa = a->parameters(), pc = c->parameters();
  ASSERT_EQ(pa.size(), pc.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_NE(pa[i].impl()->storage, pc[i].impl()->storage);
    EXPECT_TRUE(pc[i].requires_grad());
  }
  {
    NoGradGuard ng;
    pc[0].add_(1.0);
  }
  EXPECT_FALSE(allclose(a(x), c->forward(x)));
}

TEST(Module, TrainEvalZeroGradApply) {
  auto net = make_net();
  net->eval();
  for (auto& c : net->children()) EXPECT_FALSE(c->is_training());
  net->train();
  Tensor loss = net(randn({3, 1, 4, 4})).sum();
  loss.backward();
  for (auto& p : net->parameters()) EXPECT_TRUE(p.grad().defined());
  net->zero_grad(false);
  for (auto& p : net->parameters()) EXPECT_EQ(p.grad().abs().sum().item<float>(), 0.0f);
  net->zero_grad();
  for (auto& p : net->parameters()) EXPECT_FALSE(p.grad().defined());
  int count = 0;
  net->apply([&](nn::Module&) { ++count; });
  EXPECT_EQ(count, 7);
}

TEST(Module, DefaultInitialisationBounds) {
  manual_seed(0);
  nn::Linear fc(400, 50);
  double bound = 1.0 / std::sqrt(400.0);
  EXPECT_LE(fc->weight.abs().max().item<float>(), bound);
  EXPECT_GT(fc->weight.abs().max().item<float>(), 0.95 * bound);
  // U(-b, b) has variance b^2/3.
  EXPECT_NEAR((fc->weight * fc->weight).mean().item<float>(), bound * bound / 3,
              0.05 * bound * bound);
  nn::Conv2d conv(8, 16, 3);
  double cb = 1.0 / std::sqrt(8.0 * 9.0);
  EXPECT_LE(conv->weight.abs().max().item<float>(), cb);
  EXPECT_LE(conv->bias.abs().max().item<float>(), cb);
  nn::BatchNorm2d bn(5);
  EXPECT_EQ(bn->weight.sum().item<float>(), 5.0f);
  EXPECT_EQ(bn->running_var.sum().item<float>(), 5.0f);
}

TEST(Module, BadInputsGiveClearErrors) {
  nn::Linear fc(4, 2);
  const std::string m = test::error_message([&] { fc(randn({3, 5})); });
  EXPECT_NE(m.find("(3, 5)"), std::string::npos) << m;
  nn::Conv2d conv(3, 4, 3);
  EXPECT_THROW(conv(randn({1, 2, 5, 5})), Error);
  EXPECT_THROW(conv(randn({3, 5, 5})), Error);
  EXPECT_THROW(nn::Conv2d(3, 4, 3, {.groups = 2}), Error);
  nn::BatchNorm2d bn(3);
  EXPECT_THROW(bn(randn({2, 4, 3, 3})), Error);
  EXPECT_THROW(bn(randn({1, 3})), Error);
  EXPECT_THROW(bn(randn({1, 3, 1, 1})), Error);  // one value per channel in training
  nn::MaxPool2d mp(2);
  EXPECT_THROW(mp(randn({2, 2})), Error);
  EXPECT_THROW(nn::Dropout(1.5), Error);
}

TEST(Module, DropoutScalesAndZeroes) {
  manual_seed(3);
  nn::Dropout d(0.25);
  Tensor y = d(ones({10000}));
  auto v = y.to_vector_float();
  int zeros_count = 0;
  for (float f : v) {
    if (f == 0)
      ++zeros_count;
    else
      EXPECT_FLOAT_EQ(f, 1.0f / 0.75f);
  }
  EXPECT_NEAR(zeros_count / 10000.0, 0.25, 0.02);
  d->eval();
  EXPECT_EQ(d(ones({5})).sum().item<float>(), 5.0f);
}

TEST(Module, ToDeviceKeepsIdentity) {
  nn::Linear fc(2, 2);
  Tensor w = fc->weight;
  fc->to(Device::CPU(1));
  EXPECT_EQ(fc->weight.device(), Device::CPU(1));
  EXPECT_TRUE(w.is_same(fc->weight));
  EXPECT_THROW(fc(randn({1, 2})), Error);  // input on cpu:0
  EXPECT_EQ(fc(randn({1, 2}).to(Device::CPU(1))).device(), Device::CPU(1));
}

// PyTorch's forward hooks: a pre-hook may replace the input, a hook the output; they run when the
// module is called (operator(), a holder, Sequential, call_multi), in registration order unless
// prepended; remove() unregisters; a clone starts without hooks.
TEST(Module, ForwardHooks) {
  nn::Linear fc(2, 2);
  Tensor x = tensor(std::vector<float>{1.f, 2.f}, Shape{1, 2});
  const Tensor plain = fc->forward(x);
  std::vector<std::string> order;
  auto pre = fc->register_forward_pre_hook(
      [&](nn::Module&, const std::vector<Tensor>& in) -> std::optional<std::vector<Tensor>> {
        order.push_back("pre");
        return std::vector<Tensor>{in[0] * 2.0};
      });
  auto post = fc->register_forward_hook(
      [&](nn::Module&, const std::vector<Tensor>& in,
          const std::vector<Tensor>& out) -> std::optional<std::vector<Tensor>> {
        order.push_back("post");
        EXPECT_FLOAT_EQ(in[0].to_vector_float()[1], 4.f);  // sees the replaced input
        return std::vector<Tensor>{out[0] + 1.0};
      });
  fc->register_forward_pre_hook(
      [&](nn::Module&, const std::vector<Tensor>&) -> std::optional<std::vector<Tensor>> {
        order.push_back("first");
        return std::nullopt;
      },
      /*prepend=*/true);
  // Linear is affine: f(2x) + 1 = 2 f(x) - b + 1.
  const Tensor want = plain * 2.0 - fc->bias + 1.0;
  EXPECT_TRUE(allclose(fc(x), want));
  EXPECT_EQ(order, (std::vector<std::string>{"first", "pre", "post"}));
  nn::Sequential seq({fc.ptr()});
  EXPECT_TRUE(allclose(seq(x), want));  // Sequential calls its children with their hooks
  EXPECT_TRUE(allclose(fc->call_multi({x})[0], want));
  EXPECT_TRUE(allclose(fc->forward(x), plain));  // forward() itself runs no hooks
  auto copy = std::static_pointer_cast<nn::LinearImpl>(fc->clone());
  EXPECT_FALSE(copy->has_forward_hooks());
  pre.remove();
  post.remove();
  post.remove();  // a second remove does nothing
  order.clear();
  EXPECT_TRUE(allclose(fc(x), plain));
  EXPECT_EQ(order, (std::vector<std::string>{"first"}));
}

// Storage::resize_ frees and regrows memory in place: every view sees the new memory.
TEST(Module, StorageResizeIsSeenByEveryView) {
  Tensor t = zeros({6});
  Tensor v = t.narrow(0, 2, 3);
  auto storage = t.impl()->storage;
  storage->resize_(0);
  EXPECT_EQ(storage->nbytes, 0u);
  EXPECT_EQ(storage->data, nullptr);
  storage->resize_(6 * sizeof(float));
  t.fill_(3.0);
  EXPECT_EQ(v.to_vector_float(), (std::vector<float>{3.f, 3.f, 3.f}));
  EXPECT_EQ(v.impl()->storage, storage);
}
