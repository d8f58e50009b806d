// DataParallel over CPU devices against the plain module on the whole batch: outputs,
// losses and gradients, BatchNorm semantics, several inputs, small batches, state_dict.
#include <gtest/gtest.h>

#include "error_message.h"
#include "golden.h"
#include "weft/autograd.h"
#include "weft/nn.h"
#include "weft/nn/parallel/data_parallel.h"
#include "weft/optim.h"

using namespace weft;
using weft::test::close;
namespace F = weft::nn::functional;

namespace {

std::vector<Device> cpus(int k) {
  std::vector<Device> d;
  for (int i = 0; i < k; ++i) d.push_back(Device::CPU(i));
  return d;
}

nn::Sequential conv_bn() {
  return nn::Sequential({nn::Conv2d(3, 4, 3, {.padding = {1, 1}}), nn::BatchNorm2d(4), nn::ReLU(),
                         nn::AdaptiveAvgPool2d(1), nn::Flatten(), nn::Linear(4, 5)});
}

// Two inputs: out = fc(x) * y.
class TwoInputImpl : public nn::Cloneable<TwoInputImpl> {
 public:
  TwoInputImpl() : Cloneable("TwoInput") { reset(); }
  void reset() override { fc = register_module("fc", std::make_shared<nn::LinearImpl>(3, 2)); }
  std::vector<Tensor> forward_multi(const std::vector<Tensor>& in) override {
    Tensor h = fc->forward(in[0]);
    return {h * in[1], h.sum({1}, true)};
  }
  std::shared_ptr<nn::LinearImpl> fc;
};

void expect_same_grads(const std::shared_ptr<nn::Module>& a, const std::shared_ptr<nn::Module>& b,
                       double rtol) {
  auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i)
    EXPECT_TRUE(close(pa[i].second.grad(), pb[i].second.grad(), rtol, "grad of " + pa[i].first));
}

}  // namespace

TEST(DataParallel, LinearMatchesWholeBatch) {
  for (int k : {1, 2, 3}) {
    SCOPED_TRACE("devices " + std::to_string(k));
    manual_seed(0);
    nn::Linear plain(6, 4);
    auto src = plain->clone();
    nn::DataParallel dp(src, {.device_ids = cpus(k)});
    Tensor x = randn({7, 6}), y = randn({7, 4});  // 7 is not divisible by 2 or 3
    Tensor out_dp = dp(x);
    Tensor out = plain(x);
    EXPECT_EQ(out_dp.device(), Device::CPU(0));
    EXPECT_TRUE(close(out_dp, out, 1e-5, "output"));
    Tensor l_dp = F::mse_loss(out_dp, y), l = F::mse_loss(out, y);
    EXPECT_TRUE(close(l_dp, l, 1e-5, "loss"));
    l_dp.backward();
    l.backward();
    expect_same_grads(src, plain.ptr(), 1e-5);
  }
}

TEST(DataParallel, ConvBatchNormEvalIsExact) {
  manual_seed(1);
  auto plain = conv_bn();
  {  // non-trivial running statistics
    plain(randn({8, 3, 6, 6}));
  }
  plain->eval();
  auto src = plain->clone();
  for (int k : {2, 3}) {
    nn::DataParallel dp(src, {.device_ids = cpus(k)});
    Tensor x = randn({5, 3, 6, 6});
    src->zero_grad();
    plain->zero_grad();
    Tensor a = dp(x), b = plain(x);
    EXPECT_TRUE(close(a, b, 1e-5, "output"));
    a.sum().backward();
    b.sum().backward();
    expect_same_grads(src, plain.ptr(), 1e-4);
  }
}

TEST(DataParallel, ConvBatchNormTrainFollowsPyTorchSemantics) {
  // In training each replica normalises with its own chunk's statistics, gradients sum over
  // replicas, and the running statistics come from the first replica only.
  manual_seed(2);
  auto plain = conv_bn();
  auto src = plain->clone();
  nn::DataParallel dp(src, {.device_ids = cpus(2)});
  Tensor x = randn({6, 3, 5, 5});
  Tensor out = dp(x);
  auto chunks = x.chunk(2);
  auto second = plain->clone();
  Tensor ref = cat({plain(chunks[0]), second->forward(chunks[1])});
  EXPECT_TRUE(close(out, ref, 1e-5, "output"));
  out.sum().backward();
  ref.sum().backward();
  auto ps = src->named_parameters(), p0 = plain->named_parameters(),
       p1 = second->named_parameters();
  for (size_t i = 0; i < ps.size(); ++i)
    EXPECT_TRUE(
        close(ps[i].second.grad(), p0[i].second.grad() + p1[i].second.grad(), 1e-4, ps[i].first));
  auto bs = src->named_buffers(), b0 = plain->named_buffers();
  for (size_t i = 0; i < bs.size(); ++i)
    EXPECT_TRUE(close(bs[i].second.to(kFloat32), b0[i].second.to(kFloat32), 1e-6, bs[i].first));
}

TEST(DataParallel, SeveralInputsAndOutputs) {
  manual_seed(3);
  auto plain = std::make_shared<TwoInputImpl>();
  auto src = plain->clone();
  nn::DataParallel dp(src, {.device_ids = cpus(3)});
  Tensor x = randn({5, 3}), y = randn({5, 2});
  auto a = dp->forward_multi({x, y});
  auto b = plain->forward_multi({x, y});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_TRUE(close(a[0], b[0], 1e-5, "out0"));
  EXPECT_TRUE(close(a[1], b[1], 1e-5, "out1"));
  (a[0].sum() + a[1].sum()).backward();
  (b[0].sum() + b[1].sum()).backward();
  expect_same_grads(src, plain, 1e-5);
  // Inputs that cannot be split alike are refused.
  EXPECT_THROW(dp->forward_multi({randn({5, 3}), randn({2, 2})}), Error);
}

TEST(DataParallel, SmallBatchUsesFewerDevices) {
  manual_seed(4);
  nn::Linear plain(3, 2);
  auto src = plain->clone();
  nn::DataParallel dp(src, {.device_ids = cpus(3)});
  Tensor x = randn({2, 3});
  Tensor a = dp(x);
  EXPECT_TRUE(close(a, plain(x), 1e-5, "output"));
  a.sum().backward();
  plain(x).sum().backward();
  expect_same_grads(src, plain.ptr(), 1e-5);
}

TEST(DataParallel, TrainingStepsMatchPlainTraining) {
  manual_seed(5);
  auto plain = nn::Sequential({nn::Linear(4, 8), nn::ReLU(), nn::Linear(8, 3)});
  auto src = plain->clone();
  nn::DataParallel dp(src, {.device_ids = cpus(2)});
  optim::SGD o1(plain->parameters(), {.lr = 0.1, .momentum = 0.9});
  optim::SGD o2(dp->parameters(), {.lr = 0.1, .momentum = 0.9});
  for (int step = 0; step < 5; ++step) {
    Tensor x = randn({9, 4});
    Tensor y = randint(0, 3, {9});
    o1.zero_grad();
    o2.zero_grad();
    F::cross_entropy(plain(x), y).backward();
    F::cross_entropy(dp(x), y).backward();
    o1.step();
    o2.step();
  }
  auto a = plain->parameters(), b = src->parameters();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(close(b[i], a[i], 1e-5, "param"));
}

TEST(DataParallel, StateDictPrefixAndErrors) {
  nn::Linear fc(3, 2);
  nn::DataParallel dp(fc.ptr(), {.device_ids = cpus(2)});
  auto sd = dp->state_dict();
  EXPECT_EQ(sd.keys(), (std::vector<std::string>{"module.weight", "module.bias"}));
  nn::Linear other(3, 2);
  other->load_state_dict(nn::strip_module_prefix(sd));
  EXPECT_TRUE(allclose(other->weight, fc->weight, 0, 0));
  const std::string m = test::error_message([&] { dp->load_state_dict(other->state_dict()); });
  EXPECT_NE(m.find("add_module_prefix"), std::string::npos) << m;
  dp->load_state_dict(nn::add_module_prefix(other->state_dict()));
  EXPECT_THROW(nn::DataParallel(fc.ptr(), {.device_ids = {Device::CPU(0), Device::CPU(0)}}), Error);
  nn::Linear elsewhere(3, 2);
  elsewhere->to(Device::CPU(1));
  EXPECT_THROW(nn::DataParallel(elsewhere.ptr(), {.device_ids = cpus(2)}), Error);
}

TEST(DataParallel, ReplicaErrorsNameTheDevice) {
  nn::Linear fc(3, 2);
  nn::DataParallel dp(fc.ptr(), {.device_ids = cpus(2)});
  const std::string m = test::error_message([&] { dp(randn({4, 5})); });
  EXPECT_NE(m.find("replica"), std::string::npos) << m;
}
