// Optimizers and schedulers against PyTorch's golden runs (tests/golden/optim_*, sched_*,
// train_mlp_sgd), plus state_dict round trips, zero_grad, option checks and closed forms.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "error_message.h"
#include "golden.h"
#include "weft/nn.h"
#include "weft/optim.h"

namespace weft {
namespace {

using test::close;
using test::Golden;
using test::kRtol;
using json = nlohmann::json;

constexpr int kSteps = 5;
constexpr int kParams = 3;

std::vector<Tensor> golden_params(const Golden& g) {
  std::vector<Tensor> ps;
  for (int i = 0; i < kParams; ++i)
    ps.push_back(g["param." + std::to_string(i)].clone().requires_grad_(true));
  return ps;
}

std::unique_ptr<optim::Optimizer> make_optimizer(const json& c, std::vector<Tensor> ps) {
  const std::string kind = c.at("optimizer");
  EXPECT_FALSE(c.at("maximize").get<bool>()) << "maximize is not supported";
  if (kind == "SGD")
    return std::make_unique<optim::SGD>(ps, optim::SGDOptions{.lr = c.at("lr"),
                                                              .momentum = c.at("momentum"),
                                                              .dampening = c.at("dampening"),
                                                              .weight_decay = c.at("weight_decay"),
                                                              .nesterov = c.at("nesterov")});
  optim::AdamOptions o{.lr = c.at("lr"),
                       .beta1 = c.at("betas")[0],
                       .beta2 = c.at("betas")[1],
                       .eps = c.at("eps"),
                       .weight_decay = c.at("weight_decay"),
                       .amsgrad = c.at("amsgrad")};
  if (kind == "Adam") return std::make_unique<optim::Adam>(ps, o);
  EXPECT_EQ(kind, "AdamW");
  return std::make_unique<optim::AdamW>(ps, o);
}

json config(const Golden& g) { return json::parse(g.meta.at("config")); }

void set_golden_grads(const Golden& g, std::vector<Tensor>& ps, int t) {
  for (int i = 0; i < kParams; ++i)
    ps[i].set_grad(g["grad." + std::to_string(t) + "." + std::to_string(i)].clone());
}

Tensor vec(const std::vector<float>& v) { return tensor(v, {(int64_t)v.size()}); }

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.sizes() == b.sizes() && a.to_vector_float() == b.to_vector_float();
}

class OptimGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(OptimGolden, MatchesPyTorch) {
  Golden g("optim_" + GetParam());
  json c = config(g);
  ASSERT_EQ(c.at("steps").get<int>(), kSteps);
  std::vector<Tensor> ps = golden_params(g);
  auto opt = make_optimizer(c, ps);
  for (int t = 0; t < kSteps; ++t) {
    set_golden_grads(g, ps, t);
    opt->step();
    for (int i = 0; i < kParams; ++i) {
      const std::string key = "after." + std::to_string(t) + "." + std::to_string(i);
      EXPECT_TRUE(close(ps[i], g[key], kRtol, GetParam() + " " + key));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Optim, OptimGolden,
                         ::testing::Values("sgd_plain", "sgd_momentum", "sgd_dampening",
                                           "sgd_nesterov", "sgd_wd", "adam", "adam_wd",
                                           "adam_amsgrad", "adamw", "adam_betas"));

// Runs `cut` steps, checkpoints the optimizer through a safetensors file, restores it into a
// fresh optimizer over copies of the parameters, and checks that the remaining steps give
// exactly what an uninterrupted run gives.
class OptimResume : public ::testing::TestWithParam<std::string> {};

TEST_P(OptimResume, ContinuesBitIdentically) {
  Golden g("optim_" + GetParam());
  json c = config(g);
  const int cut = 2;
  std::vector<Tensor> ref = golden_params(g);
  auto ref_opt = make_optimizer(c, ref);
  for (int t = 0; t < kSteps; ++t) {
    set_golden_grads(g, ref, t);
    ref_opt->step();
  }

  std::vector<Tensor> ps = golden_params(g);
  auto opt = make_optimizer(c, ps);
  for (int t = 0; t < cut; ++t) {
    set_golden_grads(g, ps, t);
    opt->step();
  }
  const std::string path =
      (std::filesystem::temp_directory_path() / ("weft_optim_" + GetParam() + ".safetensors"))
          .string();
  optim::OptimizerState saved = opt->state_dict();
  EXPECT_FALSE(saved.tensors.empty());
  save(saved.tensors, path, saved.scalars);
  // Training goes on after the snapshot; the snapshot must not follow it.
  set_golden_grads(g, ps, cut);
  opt->step();

  optim::OptimizerState loaded;
  loaded.tensors = load(path, Device::CPU(), &loaded.scalars);
  std::filesystem::remove(path);
  EXPECT_EQ(loaded.scalars, saved.scalars);

  // Restore the parameters as of the cut, from a second run of the first `cut` steps.
  std::vector<Tensor> ref2 = golden_params(g);
  auto ref2_opt = make_optimizer(c, ref2);
  for (int t = 0; t < cut; ++t) {
    set_golden_grads(g, ref2, t);
    ref2_opt->step();
  }
  std::vector<Tensor> ps2;
  for (int i = 0; i < kParams; ++i) ps2.push_back(ref2[i].detach().clone().requires_grad_());
  // Hyperparameters come from the state, not from the constructor.
  json other = c;
  other["lr"] = 123.0;
  auto opt2 = make_optimizer(other, ps2);
  opt2->load_state_dict(loaded);
  EXPECT_EQ(opt2->param_groups()[0].options.lr, c.at("lr").get<double>());
  for (int t = cut; t < kSteps; ++t) {
    set_golden_grads(g, ps2, t);
    opt2->step();
  }
  for (int i = 0; i < kParams; ++i) EXPECT_TRUE(bit_equal(ps2[i], ref[i])) << "param " << i;
}

INSTANTIATE_TEST_SUITE_P(Optim, OptimResume,
                         ::testing::Values("sgd_momentum", "sgd_nesterov", "adam_amsgrad",
                                           "adamw"));

TEST(Optim, LoadStateDictRejectsMismatches) {
  std::vector<Tensor> a = {randn({2, 3}).requires_grad_(), randn({4}).requires_grad_()};
  optim::Adam opt(a, {.lr = 0.1});
  for (auto& p : a) p.set_grad(ones(p.sizes()));
  opt.step();
  optim::OptimizerState st = opt.state_dict();
  EXPECT_EQ(st.scalars.at("state.0.step"), "1");
  EXPECT_EQ(st.scalars.at("param_groups.0.lr"), "0.10000000000000001");

  // Fewer parameters.
  std::vector<Tensor> b = {randn({2, 3}).requires_grad_()};
  optim::Adam opt_b(b, {});
  std::string m = test::error_message([&] { opt_b.load_state_dict(st); });
  EXPECT_NE(m.find("parameters"), std::string::npos) << m;

  // Same count, different shape: the message names the buffer and both shapes.
  std::vector<Tensor> c = {randn({3, 2}).requires_grad_(), randn({4}).requires_grad_()};
  optim::Adam opt_c(c, {.lr = 0.5});
  m = test::error_message([&] { opt_c.load_state_dict(st); });
  EXPECT_NE(m.find("state.0.exp_avg"), std::string::npos) << m;
  EXPECT_NE(m.find("(3, 2)"), std::string::npos) << m;
  // A failed load leaves the optimizer as it was.
  EXPECT_EQ(opt_c.param_groups()[0].options.lr, 0.5);

  optim::OptimizerState bad = st;
  bad.scalars["state.0.step"] = "x1";
  EXPECT_THROW(opt.load_state_dict(bad), Error);
  bad = st;
  bad.scalars.erase("param_groups.0.lr");
  EXPECT_THROW(opt.load_state_dict(bad), Error);
  bad = st;
  bad.tensors.insert("state.7.exp_avg", zeros({4}));
  EXPECT_THROW(opt.load_state_dict(bad), Error);
  bad = st;
  bad.tensors.insert("junk", zeros({4}));
  EXPECT_THROW(opt.load_state_dict(bad), Error);
  EXPECT_NO_THROW(opt.load_state_dict(st));
}

TEST(Optim, ZeroGrad) {
  Tensor p = randn({3}).requires_grad_();
  optim::SGD opt({p}, {.lr = 0.1});
  p.set_grad(ones({3}));
  Tensor before = p.grad();
  opt.zero_grad(false);
  ASSERT_TRUE(p.grad().defined());
  EXPECT_TRUE(p.grad().is_same(before));  // zeroed in place, as PyTorch's set_to_none=False
  EXPECT_EQ(p.grad().to_vector_float(), std::vector<float>(3, 0.0f));
  opt.zero_grad();
  EXPECT_FALSE(p.grad().defined());
  opt.zero_grad();  // no gradient: nothing to do
  EXPECT_FALSE(p.grad().defined());
}

TEST(Optim, SkipsParametersWithoutGradient) {
  Tensor a = randn({3}).requires_grad_(), b = randn({2}).requires_grad_();
  Tensor b0 = b.clone();
  optim::Adam opt({a, b}, {.lr = 0.1});
  a.set_grad(ones({3}));
  opt.step();
  EXPECT_TRUE(bit_equal(b, b0));
  optim::OptimizerState st = opt.state_dict();
  EXPECT_EQ(st.scalars.count("state.1.step"), 0u);
  EXPECT_TRUE(st.tensors.contains("state.0.exp_avg"));
  EXPECT_FALSE(st.tensors.contains("state.1.exp_avg"));
}

TEST(Optim, RejectsBadOptions) {
  Tensor p = randn({2}).requires_grad_();
  EXPECT_THROW(optim::SGD({p}, {.lr = -1.0}), Error);
  EXPECT_THROW(optim::SGD({p}, {.lr = 0.1, .nesterov = true}), Error);
  EXPECT_THROW(optim::SGD({p}, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}),
               Error);
  EXPECT_THROW(optim::SGD({p}, {.lr = 0.1, .momentum = -0.5}), Error);
  EXPECT_THROW(optim::Adam({p}, {.lr = -1.0}), Error);
  EXPECT_THROW(optim::Adam({p}, {.beta1 = 1.0}), Error);
  EXPECT_THROW(optim::Adam({p}, {.beta2 = -0.1}), Error);
  EXPECT_THROW(optim::AdamW({p}, {.eps = -1.0}), Error);
  EXPECT_THROW(optim::SGD({p, p}, {.lr = 0.1}), Error);  // same parameter twice
  const std::string m =
      test::error_message([&] { optim::SGD({p}, {.lr = 0.1, .nesterov = true}); });
  EXPECT_NE(m.find("nesterov"), std::string::npos) << m;
  // Edited after construction: checked at step().
  optim::SGD opt({p}, {.lr = 0.1});
  opt.param_groups()[0].options.lr = -0.1;
  p.set_grad(ones({2}));
  EXPECT_THROW(opt.step(), Error);
}

TEST(Optim, RejectsNonContiguousAndNonFloat) {
  Tensor p = randn({3, 4}).t().requires_grad_();
  p.set_grad(zeros({4, 3}));
  optim::SGD opt({p}, {.lr = 0.1});
  const std::string m = test::error_message([&] { opt.step(); });
  EXPECT_NE(m.find("contiguous"), std::string::npos) << m;
}

// SGD on f(x) = x^2/2 (gradient x) is x_t = (1 - lr)^t x_0; with momentum it follows
// x_{t+1} = x_t - lr v_{t+1}, v_{t+1} = mu v_t + x_t.
TEST(Optim, ClosedFormQuadratic) {
  Tensor x = vec({1.0f, -2.0f, 0.5f}).requires_grad_();
  optim::SGD opt({x}, {.lr = 0.1});
  for (int t = 1; t <= 6; ++t) {
    opt.zero_grad();
    ((x * x).sum() * 0.5).backward();
    opt.step();
    const double f = std::pow(0.9, t);
    EXPECT_TRUE(close(x, vec({(float)f, (float)(-2 * f), (float)(0.5 * f)}), 1e-6));
  }

  Tensor y = vec({1.0f}).requires_grad_();
  optim::SGD mom({y}, {.lr = 0.1, .momentum = 0.5});
  double yv = 1.0, v = 0.0;
  for (int t = 0; t < 6; ++t) {
    mom.zero_grad();
    ((y * y).sum() * 0.5).backward();
    mom.step();
    v = (t == 0) ? yv : 0.5 * v + yv;
    yv -= 0.1 * v;
    EXPECT_NEAR(y.item<float>(), yv, 1e-6);
  }

  // Adam's first step moves each coordinate by lr against the gradient's sign (m/sqrt(v)
  // after bias correction is g/|g|), whatever the gradient's size.
  Tensor z = vec({1.0f, -3.0f, 100.0f}).requires_grad_();
  optim::Adam adam({z}, {.lr = 0.01});
  ((z * z).sum() * 0.5).backward();
  adam.step();
  EXPECT_TRUE(close(z, vec({0.99f, -2.99f, 99.99f}), 1e-6));
}

void check_schedule(const std::string& name, optim::LRScheduler& sched, optim::Optimizer& opt) {
  Golden g(name);
  std::vector<float> lrs = g["lrs"].to_vector_float();
  ASSERT_EQ(lrs.size(), 12u);
  for (size_t e = 0; e < lrs.size(); ++e) {
    const double lr = opt.param_groups()[0].options.lr;
    EXPECT_NEAR(lr, lrs[e], 1e-6 * std::abs(lrs[e])) << name << " epoch " << e;
    EXPECT_EQ(sched.get_last_lr()[0], lr);
    opt.step();
    sched.step();
  }
  EXPECT_EQ(sched.last_epoch(), 12);
  // Resume: set_last_epoch re-applies that epoch's lr.
  sched.set_last_epoch(4);
  EXPECT_NEAR(opt.param_groups()[0].options.lr, lrs[4], 1e-6 * lrs[4]);
}

TEST(LRScheduler, StepLRMatchesPyTorch) {
  Golden g("sched_steplr");
  json c = config(g);
  Tensor p = zeros({1}).requires_grad_();
  optim::SGD opt({p}, {.lr = c.at("base_lr")});
  optim::StepLR sched(opt, c.at("step_size"), c.at("gamma"));
  check_schedule("sched_steplr", sched, opt);
  EXPECT_THROW(optim::StepLR(opt, 0), Error);
}

TEST(LRScheduler, CosineMatchesPyTorch) {
  Golden g("sched_cosine");
  json c = config(g);
  Tensor p = zeros({1}).requires_grad_();
  optim::SGD opt({p}, {.lr = c.at("base_lr")});
  optim::CosineAnnealingLR sched(opt, c.at("T_max"), c.at("eta_min"));
  check_schedule("sched_cosine", sched, opt);
  EXPECT_THROW(optim::CosineAnnealingLR(opt, 0), Error);
}

TEST(OptimTrain, MlpSgdMatchesPyTorch) {
  Golden g("train_mlp_sgd");
  nn::Sequential model{nn::Linear(4, 8), nn::ReLU(), nn::Linear(8, 3)};
  model->load_state_dict(g.params());
  optim::SGD opt(model->parameters(), {.lr = 0.1, .momentum = 0.9});
  std::vector<float> losses = g["loss"].to_vector_float();
  ASSERT_EQ(losses.size(), 5u);
  for (int t = 0; t < 5; ++t) {
    opt.zero_grad();
    Tensor loss = nn::functional::cross_entropy(model(g["in." + std::to_string(t)]),
                                                g["target." + std::to_string(t)]);
    loss.backward();
    opt.step();
    EXPECT_NEAR(loss.item<float>(), losses[t], 1e-5 * std::abs(losses[t])) << "step " << t;
  }
  for (const auto& [k, v] : model->state_dict()) EXPECT_TRUE(close(v, g["after." + k], kRtol, k));
}

}  // namespace
}  // namespace weft
