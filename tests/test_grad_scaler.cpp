// amp::GradScaler against closed forms of torch.amp.GradScaler's rules (a scale that backs off by
// backoff_factor after an overflow and grows by growth_factor after growth_interval clean steps)
// and against PyTorch's own unscaled training golden: with a power-of-two scale, scaling and
// unscaling are exact, so a scaled run must equal PyTorch's train_mlp_sgd run.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "error_message.h"
#include "golden.h"
#include "weft/amp.h"
#include "weft/nn.h"
#include "weft/optim.h"

namespace weft {
namespace {

using test::close;
using test::Golden;
using test::kRtol;

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.sizes() == b.sizes() && a.to_vector_float() == b.to_vector_float();
}

// One forward/backward of a small model on a fixed batch; returns the unscaled loss.
Tensor loss_of(nn::Sequential& model, int t) {
  manual_seed(100 + t);
  Tensor x = randn({6, 4}), y = randn({6, 3});
  return nn::functional::mse_loss(model(x), y);
}

nn::Sequential make_model() {
  manual_seed(7);
  return nn::Sequential{nn::Linear(4, 8), nn::Tanh(), nn::Linear(8, 3)};
}

TEST(GradScaler, ScaledTrainingMatchesPyTorchUnscaledGolden) {
  Golden g("train_mlp_sgd");
  nn::Sequential model{nn::Linear(4, 8), nn::ReLU(), nn::Linear(8, 3)};
  model->load_state_dict(g.params());
  optim::SGD opt(model->parameters(), {.lr = 0.1, .momentum = 0.9});
  amp::GradScaler scaler({.init_scale = 1024.0, .growth_interval = 2});
  for (int t = 0; t < 5; ++t) {
    opt.zero_grad();
    Tensor loss = nn::functional::cross_entropy(model(g["in." + std::to_string(t)]),
                                                g["target." + std::to_string(t)]);
    Tensor scaled = scaler.scale(loss);
    EXPECT_EQ(scaled.dim(), 0) << "the scaled loss keeps the loss's shape";
    EXPECT_EQ(scaled.item<float>(), loss.item<float>() * (float)scaler.get_scale());
    scaled.backward();
    EXPECT_TRUE(scaler.step(opt));
    scaler.update();
  }
  for (const auto& [k, v] : model->state_dict()) EXPECT_TRUE(close(v, g["after." + k], kRtol, k));
  // 5 clean steps at growth_interval 2: grown twice, one clean step counted since.
  EXPECT_EQ(scaler.get_scale(), 1024.0 * 4);
  EXPECT_EQ(scaler.growth_tracker(), 1);
}

TEST(GradScaler, StepsEqualUnscaledTrainingBitForBit) {
  nn::Sequential a = make_model(), b = make_model();
  optim::SGD oa(a->parameters(), {.lr = 0.05, .momentum = 0.9, .nesterov = true});
  optim::SGD ob(b->parameters(), {.lr = 0.05, .momentum = 0.9, .nesterov = true});
  amp::GradScaler scaler({.init_scale = 65536.0, .growth_interval = 3});
  for (int t = 0; t < 7; ++t) {
    oa.zero_grad();
    ob.zero_grad();
    scaler.scale(loss_of(a, t)).backward();
    loss_of(b, t).backward();
    scaler.unscale_(oa);  // as before gradient clipping: the grads are the true ones now
    for (size_t i = 0; i < a->parameters().size(); ++i)
      ASSERT_TRUE(bit_equal(a->parameters()[i].grad(), b->parameters()[i].grad()))
          << "step " << t << " grad " << i;
    EXPECT_TRUE(scaler.step(oa));  // no second unscale
    ob.step();
    scaler.update();
    for (size_t i = 0; i < a->parameters().size(); ++i)
      ASSERT_TRUE(bit_equal(a->parameters()[i], b->parameters()[i])) << "step " << t;
  }
  EXPECT_EQ(scaler.get_scale(), 65536.0 * 4);  // grown after steps 3 and 6
}

TEST(GradScaler, OverflowSkipsTheStepAndBacksOff) {
  for (float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                    std::numeric_limits<float>::quiet_NaN()}) {
    nn::Sequential m = make_model();
    optim::Adam opt(m->parameters(), {.lr = 0.01});
    amp::GradScaler scaler({.init_scale = 256.0});
    scaler.scale(loss_of(m, 0)).backward();
    Tensor w = m->parameters()[2];
    w.grad().data_ptr<float>()[1] = bad;
    std::vector<Tensor> before;
    for (auto& p : m->parameters()) before.push_back(p.clone());
    EXPECT_FALSE(scaler.step(opt));
    for (size_t i = 0; i < before.size(); ++i)
      EXPECT_TRUE(bit_equal(m->parameters()[i], before[i])) << "param " << i << " changed";
    EXPECT_TRUE(opt.state_dict().tensors.empty()) << "a skipped step creates no Adam state";
    scaler.update();
    EXPECT_EQ(scaler.get_scale(), 128.0);
    EXPECT_EQ(scaler.growth_tracker(), 0);
  }
}

// PyTorch's _amp_update_scale_ rule, step by step (interval 3, factors 2 and 0.5).
TEST(GradScaler, GrowthTrackerSequence) {
  nn::Sequential m = make_model();
  optim::SGD opt(m->parameters(), {.lr = 0.0});
  amp::GradScaler scaler({.init_scale = 8.0, .growth_interval = 3});
  const bool overflow[] = {false, false, true, false, false, false, false};
  const double scale_after[] = {8, 8, 4, 4, 4, 8, 8};
  const int64_t tracker_after[] = {1, 2, 0, 1, 2, 0, 1};
  for (int t = 0; t < 7; ++t) {
    opt.zero_grad();
    scaler.scale(loss_of(m, t)).backward();
    if (overflow[t]) m->parameters()[0].grad().data_ptr<float>()[0] = INFINITY;
    EXPECT_EQ(scaler.step(opt), !overflow[t]);
    scaler.update();
    EXPECT_EQ(scaler.get_scale(), scale_after[t]) << "step " << t;
    EXPECT_EQ(scaler.growth_tracker(), tracker_after[t]) << "step " << t;
  }
  // A growth that would overflow float keeps the scale (and still restarts the count).
  amp::GradScaler big({.init_scale = 3e38, .growth_interval = 1});
  opt.zero_grad();
  (loss_of(m, 0) * 1e-38).backward();
  big.scale(Tensor(zeros({}))).item<float>();  // initialises the scale
  EXPECT_TRUE(big.step(opt));
  big.update();
  EXPECT_EQ(big.get_scale(), (double)3e38f);
  EXPECT_EQ(big.growth_tracker(), 0);
  big.update(1024.0);  // an explicit scale
  EXPECT_EQ(big.get_scale(), 1024.0);
}

TEST(GradScaler, MisuseIsAClearError) {
  nn::Sequential m = make_model();
  optim::SGD opt(m->parameters(), {.lr = 0.1});
  amp::GradScaler scaler;
  EXPECT_THROW(scaler.unscale_(opt), Error);  // nothing scaled yet
  scaler.scale(loss_of(m, 0)).backward();
  EXPECT_THROW(scaler.update(), Error);  // no inf check recorded
  scaler.unscale_(opt);
  EXPECT_THROW(scaler.unscale_(opt), Error);
  scaler.step(opt);
  EXPECT_THROW(scaler.step(opt), Error);
  EXPECT_THROW(scaler.unscale_(opt), Error);
  scaler.update();
  EXPECT_THROW(amp::GradScaler({.growth_factor = 0.5}), Error);
  EXPECT_THROW(amp::GradScaler({.backoff_factor = 1.5}), Error);
  EXPECT_THROW(amp::GradScaler({.init_scale = -1}), Error);
  // A malformed number is refused.
  std::string msg = test::error_message([] {
    amp::GradScaler s;
    s.load_state_dict({{"scale", "12"},
                       {"growth_factor", "2"},
                       {"backoff_factor", "x"},
                       {"growth_interval", "5"},
                       {"_growth_tracker", "0"}});
  });
  EXPECT_NE(msg.find("backoff_factor"), std::string::npos) << msg;
  // A state without growth_factor is refused.
  msg = test::error_message([] {
    amp::GradScaler s;
    s.load_state_dict({{"scale", "12"}});
  });
  EXPECT_NE(msg.find("growth_factor"), std::string::npos) << msg;
}

TEST(GradScaler, DisabledIsAPassThrough) {
  nn::Sequential a = make_model(), b = make_model();
  optim::SGD oa(a->parameters(), {.lr = 0.1}), ob(b->parameters(), {.lr = 0.1});
  amp::GradScaler off({.enabled = false});
  Tensor loss = loss_of(a, 0);
  Tensor same = off.scale(loss);
  EXPECT_TRUE(bit_equal(same, loss));
  same.backward();
  EXPECT_TRUE(off.step(oa));
  off.update();
  loss_of(b, 0).backward();
  ob.step();
  for (size_t i = 0; i < a->parameters().size(); ++i)
    EXPECT_TRUE(bit_equal(a->parameters()[i], b->parameters()[i]));
  EXPECT_TRUE(off.state_dict().empty());
  EXPECT_THROW(off.load_state_dict({{"scale", "1"}}), Error);
}

TEST(GradScaler, StateDictResumesExactly) {
  nn::Sequential m = make_model();
  optim::SGD opt(m->parameters(), {.lr = 0.0});
  amp::GradScaler a({.init_scale = 32.0, .growth_factor = 4.0, .growth_interval = 3});
  for (int t = 0; t < 2; ++t) {
    opt.zero_grad();
    a.scale(loss_of(m, t)).backward();
    a.step(opt);
    a.update();
  }
  auto state = a.state_dict();
  EXPECT_EQ(state.at("scale"), "32");
  EXPECT_EQ(state.at("_growth_tracker"), "2");
  amp::GradScaler b;  // different options: the state replaces them
  b.load_state_dict(state);
  EXPECT_EQ(b.get_scale(), 32.0);
  EXPECT_EQ(b.growth_tracker(), 2);
  for (amp::GradScaler* s : {&a, &b}) {
    opt.zero_grad();
    s->scale(loss_of(m, 2)).backward();
    s->step(opt);
    s->update();
  }
  EXPECT_EQ(a.get_scale(), 128.0);
  EXPECT_EQ(b.get_scale(), 128.0);
  EXPECT_EQ(a.state_dict(), b.state_dict());
}

}  // namespace
}  // namespace weft
