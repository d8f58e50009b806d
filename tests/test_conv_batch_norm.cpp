// Conv2d -> BatchNorm -> ReLU run as one (Note [Conv-BatchNorm-ReLU fusion]):
// functional::conv2d_batch_norm_relu and Sequential's use of it against the three ops composed
// (conv2d, then batch_norm_relu, itself the composition's bits: test_batch_norm_relu.cpp):
// outputs, every gradient and the running statistics, bit for bit.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "weft/autograd.h"
#include "weft/nn.h"
#include "weft/ops.h"

using namespace weft;
namespace F = weft::nn::functional;

namespace {

struct Case {
  Shape x;
  int64_t K, k, stride, pad;
  bool conv_bias, affine;
  int64_t groups = 1;
};

struct StepResult {
  std::vector<float> y, dx, dw, db, dgamma, dbeta, rm, rv;
  std::string node;
};

std::vector<float> grad_of(const Tensor& t) {
  return t.defined() && t.grad().defined() ? t.grad().to_vector_float() : std::vector<float>();
}

// One training step, fused or composed, from the same tensors and output gradient.
StepResult run_step(bool fused, const Case& c, const std::vector<Tensor>& init, const Tensor& gy) {
  auto leaf = [](const Tensor& t) {
    return t.defined() ? t.detach().clone().requires_grad_(true) : Tensor();
  };
  Tensor x = leaf(init[0]), w = leaf(init[1]), b = leaf(init[2]), gamma = leaf(init[3]),
         beta = leaf(init[4]);
  Tensor rm = weft::zeros({c.K}), rv = weft::ones({c.K});
  const std::array<int64_t, 2> s{c.stride, c.stride}, p{c.pad, c.pad}, d{1, 1};
  Tensor y =
      fused ? F::conv2d_batch_norm_relu(x, w, b, s, p, d, c.groups, rm, rv, gamma, beta, 0.1, 1e-5)
            : F::batch_norm_relu(F::conv2d(x, w, b, s, p, d, c.groups), rm, rv, gamma, beta, true,
                                 0.1, 1e-5);
  StepResult r;
  r.y = y.detach().to_vector_float();
  r.node = y.grad_fn()->name();
  y.backward(gy);
  r.dx = grad_of(x), r.dw = grad_of(w), r.db = grad_of(b);
  r.dgamma = grad_of(gamma), r.dbeta = grad_of(beta);
  r.rm = rm.to_vector_float(), r.rv = rv.to_vector_float();
  return r;
}

// Checks one case fused against composed; whether the fused kernels took it is returned.
bool check_case(const Case& c) {
  weft::Generator gen(11);
  const int64_t C = c.x[1];
  std::vector<Tensor> init{weft::randn(c.x, &gen),
                           weft::randn({c.K, C / c.groups, c.k, c.k}, &gen) * 0.3,
                           c.conv_bias ? weft::randn({c.K}, &gen) : Tensor(),
                           c.affine ? weft::randn({c.K}, &gen) : Tensor(),
                           c.affine ? weft::randn({c.K}, &gen) * 0.5 : Tensor()};
  const int64_t Ho = (c.x[2] + 2 * c.pad - c.k) / c.stride + 1;
  Tensor gy = weft::randn({c.x[0], c.K, Ho, Ho}, &gen);
  const StepResult want = run_step(false, c, init, gy), got = run_step(true, c, init, gy);
  EXPECT_EQ(want.node, "BatchNormReluBackward");
  EXPECT_EQ(got.y, want.y);
  EXPECT_EQ(got.dx, want.dx);
  EXPECT_EQ(got.dw, want.dw);
  EXPECT_EQ(got.db, want.db);
  EXPECT_EQ(got.dgamma, want.dgamma);
  EXPECT_EQ(got.dbeta, want.dbeta);
  EXPECT_EQ(got.rm, want.rm);
  EXPECT_EQ(got.rv, want.rv);
  // The ReLU really cut, so the recomputed mask mattered.
  size_t zeros = 0;
  for (float v : got.y) zeros += v == 0.0f;
  EXPECT_GT(zeros, got.y.size() / 10);
  return got.node == "ConvBatchNormReluBackward";
}

// Maps of 32x32 (positions a multiple of the 32 lanes and of the tile), 12x12 (144: a lane
// tail of 16) and 10x10 (100: lane and tile tails); Winograd's shape (32 -> 64 channels, 3x3),
// direct convolutions from 3 channels, stride 2, 1x1, no conv bias, no affine, 4 groups.
const std::vector<Case> kCases = {
    {{2, 32, 32, 32}, 64, 3, 1, 1, true, true},  {{3, 3, 12, 12}, 32, 3, 1, 1, true, true},
    {{2, 16, 20, 20}, 16, 3, 2, 1, false, true}, {{2, 8, 10, 10}, 32, 1, 1, 0, true, false},
    {{4, 32, 12, 12}, 48, 3, 1, 1, false, true}, {{2, 32, 10, 10}, 64, 3, 1, 1, true, true, 4},
};

}  // namespace

TEST(ConvBatchNormRelu, FusedEqualsComposition) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(shape_str(c.x) + " -> " + std::to_string(c.K));
    // On this machine's oneDNN every one of these keeps a blocked output (8 or 16 channels).
    EXPECT_TRUE(check_case(c));
  }
}

TEST(ConvBatchNormRelu, FusedEqualsCompositionOnTwoThreads) {
  const int before = get_num_threads();
  set_num_threads(2);
  for (const Case& c : {kCases[0], kCases[2]}) {
    SCOPED_TRACE(shape_str(c.x));
    EXPECT_TRUE(check_case(c));
  }
  set_num_threads(before);
}

// What the kernels do not take runs composed, with the same values: maps under 32 positions
// (the lane kernels' short rows) and channel counts no block divides.
TEST(ConvBatchNormRelu, UntakenShapesAreTheComposition) {
  for (const Case& c :
       {Case{{2, 8, 5, 5}, 16, 3, 1, 1, true, true}, Case{{2, 4, 9, 9}, 10, 3, 1, 1, true, true}}) {
    SCOPED_TRACE(shape_str(c.x));
    EXPECT_FALSE(check_case(c));
  }
}

namespace {

// Runs `seq` and the same modules one by one (a clone, never fused) for two training steps and
// expects the same bits in outputs, parameter gradients and buffers.
void expect_sequential_matches_modules(nn::Sequential& seq, const Shape& in) {
  auto ref = std::dynamic_pointer_cast<nn::SequentialImpl>(seq->clone());
  weft::Generator gen(8);
  Tensor x = weft::randn(in, &gen).requires_grad_(true), xr = x.detach().requires_grad_(true);
  for (int step = 0; step < 2; ++step) {
    Tensor y = seq(x), h = xr;
    for (size_t i = 0; i < ref->size(); ++i) h = (*(*ref)[i])(h);
    EXPECT_EQ(y.detach().to_vector_float(), h.detach().to_vector_float());
    (y * y).sum().backward();
    (h * h).sum().backward();
  }
  EXPECT_EQ(x.grad().to_vector_float(), xr.grad().to_vector_float());
  const auto got = seq->named_parameters(), want = ref->named_parameters();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(got[i].first);
    EXPECT_EQ(got[i].second.grad().to_vector_float(), want[i].second.grad().to_vector_float());
  }
  const auto gb = seq->named_buffers(), wb = ref->named_buffers();
  for (size_t i = 0; i < gb.size() && i < wb.size(); ++i)
    EXPECT_EQ(gb[i].second.to(kFloat32).to_vector_float(),
              wb[i].second.to(kFloat32).to_vector_float());
}

nn::Conv2dOptions conv_opts(int64_t stride, int64_t pad) {
  nn::Conv2dOptions o;
  o.stride = {stride, stride};
  o.padding = {pad, pad};
  return o;
}

}  // namespace

// Sequential runs Conv2d, BatchNorm2d, ReLU in training mode fused; the same modules called
// one by one (never fused) give the same outputs, gradients, running statistics and
// num_batches_tracked, over two steps, and the same in eval mode.
TEST(ConvBatchNormRelu, SequentialFusesAndMatchesModuleByModule) {
  manual_seed(9);
  nn::Sequential seq{nn::Conv2d(3, 16, 3, conv_opts(1, 1)),
                     nn::BatchNorm2d(16),
                     nn::ReLU(),
                     nn::Conv2d(16, 32, 3, conv_opts(1, 1)),
                     nn::BatchNorm2d(32),
                     nn::ReLU(),
                     nn::AdaptiveAvgPool2d(1),
                     nn::Flatten(),
                     nn::Linear(32, 3)};
  expect_sequential_matches_modules(seq, {4, 3, 12, 12});
  seq->eval();
  auto ref = std::dynamic_pointer_cast<nn::SequentialImpl>(seq->clone());
  weft::Generator gen(4);
  Tensor x = weft::randn({4, 3, 12, 12}, &gen);
  Tensor h = x;
  for (size_t i = 0; i < ref->size(); ++i) h = (*(*ref)[i])(h);
  EXPECT_EQ(seq(x).detach().to_vector_float(), h.detach().to_vector_float());
  nn::Sequential head{(*seq)[0], (*seq)[1], (*seq)[2]};
  EXPECT_EQ(head(x).grad_fn()->name(), "ReluBackward");  // eval mode: not fused
  head->train();
  EXPECT_EQ(head(x).grad_fn()->name(), "ConvBatchNormReluBackward");
}

// A forward hook on any of the three needs an intermediate output: Sequential then runs them
// apart. A BatchNorm2d of the wrong width is refused with batch_norm's own error.
TEST(ConvBatchNormRelu, SequentialKeepsHookedModulesApartAndRefusesBadShapes) {
  manual_seed(2);
  nn::Conv2d conv(4, 16, 3, conv_opts(1, 1));
  nn::Sequential seq{conv.ptr(), nn::BatchNorm2d(16).ptr(), nn::ReLU().ptr()};
  Tensor seen;
  auto handle = conv->register_forward_hook(
      [&](nn::Module&, const std::vector<Tensor>&,
          const std::vector<Tensor>& out) -> std::optional<std::vector<Tensor>> {
        seen = out[0].detach();
        return std::nullopt;
      });
  weft::Generator gen(1);
  Tensor x = weft::randn({2, 4, 8, 8}, &gen).requires_grad_(true);
  EXPECT_EQ(seq(x).grad_fn()->name(), "BatchNormReluBackward");
  ASSERT_TRUE(seen.defined());
  EXPECT_EQ(seen.sizes(), (Shape{2, 16, 8, 8}));
  handle.remove();
  EXPECT_EQ(seq(x).grad_fn()->name(), "ConvBatchNormReluBackward");
  nn::Sequential wrong{conv.ptr(), nn::BatchNorm2d(8).ptr(), nn::ReLU().ptr()};
  try {
    wrong(x);
    ADD_FAILURE() << "a BatchNorm2d(8) after 16 channels was accepted";
  } catch (const weft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("16 channels"), std::string::npos) << e.what();
  }
  Tensor bad = weft::randn({2, 3, 8, 8}, &gen);
  EXPECT_THROW(seq(bad), weft::Error);
}

// Three blocks in a row hand each other channel-blocked outputs (the input gradient of the
// first comes back through all of them); the same bits as module by module.
TEST(ConvBatchNormRelu, ChainedBlocksMatchModuleByModule) {
  manual_seed(21);
  nn::Sequential seq{nn::Conv2d(3, 16, 3, conv_opts(1, 1)),  nn::BatchNorm2d(16), nn::ReLU(),
                     nn::Conv2d(16, 32, 3, conv_opts(1, 1)), nn::BatchNorm2d(32), nn::ReLU(),
                     nn::Conv2d(32, 16, 1, conv_opts(1, 0)), nn::BatchNorm2d(16), nn::ReLU()};
  expect_sequential_matches_modules(seq, {3, 3, 10, 10});
}

// Where the next block turns out not to fuse, the blocked output goes back to NCHW first:
// a block whose output map is under 32 positions (the kernels decline), a batch norm in eval
// mode (not fused at all), and a block that is not a Conv2d-BatchNorm2d-ReLU after all.
TEST(ConvBatchNormRelu, ChainsFallBackWhereTheNextBlockDoesNotFuse) {
  manual_seed(22);
  {
    SCOPED_TRACE("kernels decline");
    nn::Sequential seq{nn::Conv2d(4, 16, 3, conv_opts(1, 1)),  nn::BatchNorm2d(16), nn::ReLU(),
                       nn::Conv2d(16, 16, 3, conv_opts(3, 1)), nn::BatchNorm2d(16), nn::ReLU()};
    expect_sequential_matches_modules(seq, {2, 4, 12, 12});
  }
  {
    SCOPED_TRACE("eval mode");
    nn::Sequential seq{nn::Conv2d(4, 16, 3, conv_opts(1, 1)),  nn::BatchNorm2d(16), nn::ReLU(),
                       nn::Conv2d(16, 16, 3, conv_opts(1, 1)), nn::BatchNorm2d(16), nn::ReLU()};
    (*seq)[4]->eval();
    expect_sequential_matches_modules(seq, {2, 4, 8, 8});
  }
}

// A second block whose convolution expects other channels gets conv2d's own error, also when
// its input arrives blocked.
TEST(ConvBatchNormRelu, ChainedBlockWithWrongChannelsIsRefused) {
  nn::Sequential seq{nn::Conv2d(4, 16, 3, conv_opts(1, 1)), nn::BatchNorm2d(16), nn::ReLU(),
                     nn::Conv2d(8, 16, 3, conv_opts(1, 1)), nn::BatchNorm2d(16), nn::ReLU()};
  weft::Generator gen(3);
  try {
    seq(weft::randn({2, 4, 8, 8}, &gen));
    ADD_FAILURE() << "a Conv2d(8, ...) after 16 channels was accepted";
  } catch (const weft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("expects 8 input channels"), std::string::npos)
        << e.what();
  }
}
