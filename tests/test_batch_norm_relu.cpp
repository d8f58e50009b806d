// BatchNorm followed by ReLU, fused (Note [BatchNorm-ReLU fusion]): functional::batch_norm_relu
// and Sequential's use of it against the unfused composition, batch_norm(...).relu(), which is
// what PyTorch computes: outputs, every gradient and the running statistics.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "weft/autograd.h"
#include "weft/nn.h"
#include "weft/ops.h"

using namespace weft;
namespace F = weft::nn::functional;

namespace {

// The largest |a - b| / max(1, |b|) over two vectors of one size.
double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    m = std::max(m, std::fabs((double)a[i] - b[i]) / std::max(1.0, std::fabs((double)b[i])));
  return m;
}

struct StepResult {
  std::vector<float> y, dx, dw, db, rm, rv;
  std::string node;
};

// One training step of relu(batch_norm(x)), fused or composed, from the same x, weight, bias,
// output gradient and running statistics.
StepResult run_step(bool fused, const Tensor& x0, const Tensor& w0, const Tensor& b0,
                    const Tensor& gy) {
  Tensor x = x0.detach().clone().requires_grad_(true);
  Tensor w = w0.detach().clone().requires_grad_(true);
  Tensor b = b0.detach().clone().requires_grad_(true);
  const int64_t C = x0.size(1);
  Tensor rm = weft::zeros({C}), rv = weft::ones({C});
  Tensor y = fused ? F::batch_norm_relu(x, rm, rv, w, b, true, 0.1, 1e-5)
                   : F::batch_norm(x, rm, rv, w, b, true, 0.1, 1e-5).relu();
  StepResult r{y.detach().to_vector_float(), {}, {}, {}, {}, {}, y.grad_fn()->name()};
  y.backward(gy);
  r.dx = x.grad().to_vector_float();
  r.dw = w.grad().to_vector_float();
  r.db = b.grad().to_vector_float();
  r.rm = rm.to_vector_float();
  r.rv = rv.to_vector_float();
  return r;
}

}  // namespace

// Conv-sized rows (S >= 32, the lane kernels' path), rows of a few values, and BatchNorm1d's
// [N, C] (S = 1, where the backward makes the masked gradient whole). Channel 0 has weight 0
// and bias 0: its outputs are exactly 0, where ReLU's gradient is 0 (y <= 0), so the fused
// mask must treat 0 as the ReLU does.
TEST(BatchNormRelu, FusedEqualsComposition) {
  for (const Shape& shape : {Shape{4, 5, 6, 7}, Shape{3, 4, 40}, Shape{6, 3, 2, 2}, Shape{16, 6}}) {
    SCOPED_TRACE(shape_str(shape));
    weft::Generator gen(3);
    const int64_t C = shape[1];
    Tensor x = weft::randn(shape, &gen) * 2.0 + 0.5;
    Tensor w = weft::randn({C}, &gen), b = weft::randn({C}, &gen) * 0.5;
    w.data_ptr<float>()[0] = 0.0f;
    b.data_ptr<float>()[0] = 0.0f;
    Tensor gy = weft::randn(shape, &gen);
    const StepResult want = run_step(false, x, w, b, gy), got = run_step(true, x, w, b, gy);
    EXPECT_EQ(want.node, "ReluBackward");
    EXPECT_EQ(got.node, "BatchNormReluBackward");
    // The same functions on the same values in the same order: the same bits.
    EXPECT_EQ(got.y, want.y);
    EXPECT_EQ(got.dx, want.dx);
    EXPECT_EQ(got.dw, want.dw);
    EXPECT_EQ(got.db, want.db);
    EXPECT_EQ(got.rm, want.rm);
    EXPECT_EQ(got.rv, want.rv);
    // The mask really cut: some outputs are 0 and some gradient entries were dropped.
    size_t zeros = 0;
    for (float v : got.y) zeros += v == 0.0f;
    EXPECT_GT(zeros, got.y.size() / 10);
    EXPECT_EQ(got.db[0], 0.0f);  // channel 0's outputs are all 0: no gradient passes
  }
}

// Outside training mode, and for 16-bit inputs, batch_norm_relu is the composition itself.
TEST(BatchNormRelu, EvalAndBf16AreTheComposition) {
  weft::Generator gen(5);
  Tensor x = weft::randn({2, 3, 8, 8}, &gen).requires_grad_(true);
  Tensor rm = weft::randn({3}, &gen), rv = weft::rand({3}, &gen) + 0.5;
  Tensor y = F::batch_norm_relu(x, rm, rv, Tensor(), Tensor(), false, 0.1, 1e-5);
  EXPECT_EQ(y.grad_fn()->name(), "ReluBackward");
  Tensor want = F::batch_norm(x, rm, rv, Tensor(), Tensor(), false, 0.1, 1e-5).relu();
  EXPECT_EQ(y.detach().to_vector_float(), want.detach().to_vector_float());
  Tensor xb = x.detach().to(DType::BFloat16).requires_grad_(true);
  Tensor yb = F::batch_norm_relu(xb, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5);
  EXPECT_EQ(yb.grad_fn()->name(), "ReluBackward");
  EXPECT_EQ(yb.dtype(), DType::BFloat16);
}

// Sequential runs a BatchNorm followed by a ReLU fused; the same modules called one by one
// (never fused) give the same outputs, parameter gradients and running statistics.
TEST(BatchNormRelu, SequentialFusesAndMatchesModuleByModule) {
  manual_seed(9);
  nn::Conv2dOptions pad1;
  pad1.padding = {1, 1};
  nn::Sequential seq{nn::Conv2d(3, 8, 3, pad1), nn::BatchNorm2d(8), nn::ReLU(),
                     nn::Conv2d(8, 4, 3, pad1), nn::BatchNorm2d(4), nn::ReLU(),
                     nn::AdaptiveAvgPool2d(1),  nn::Flatten(),      nn::Linear(4, 3)};
  auto ref = std::dynamic_pointer_cast<nn::SequentialImpl>(seq->clone());
  weft::Generator gen(4);
  Tensor x = weft::randn({4, 3, 9, 9}, &gen);
  Tensor target = weft::randint(0, 3, {4}, &gen);
  for (int step = 0; step < 2; ++step) {
    Tensor y = seq(x);
    Tensor h = x;
    for (size_t i = 0; i < ref->size(); ++i) h = (*(*ref)[i])(h);
    EXPECT_LE(max_rel(y.detach().to_vector_float(), h.detach().to_vector_float()), 1e-5);
    F::cross_entropy(y, target).backward();
    F::cross_entropy(h, target).backward();
  }
  const auto got = seq->named_parameters(), want = ref->named_parameters();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(got[i].first);
    EXPECT_LE(
        max_rel(got[i].second.grad().to_vector_float(), want[i].second.grad().to_vector_float()),
        1e-5);
  }
  const auto gb = seq->named_buffers(), wb = ref->named_buffers();
  ASSERT_EQ(gb.size(), wb.size());
  for (size_t i = 0; i < gb.size(); ++i)
    EXPECT_LE(max_rel(gb[i].second.to(kFloat32).to_vector_float(),
                      wb[i].second.to(kFloat32).to_vector_float()),
              1e-6);
  // The fused node is what Sequential recorded (after a convolution Sequential runs there, the
  // three fuse: test_conv_batch_norm.cpp).
  nn::Sequential head{(*seq)[1], (*seq)[2]};
  EXPECT_EQ(head((*seq)[0]->forward(x)).grad_fn()->name(), "BatchNormReluBackward");
}

// A forward hook on either module needs the BatchNorm's own output: Sequential then calls
// them one by one, and the hook sees that output.
TEST(BatchNormRelu, SequentialKeepsHookedModulesApart) {
  manual_seed(2);
  nn::BatchNorm2d bn(3);
  nn::ReLU relu;
  nn::Sequential seq{bn.ptr(), relu.ptr()};
  Tensor seen;
  auto handle = relu->register_forward_hook(
      [&](nn::Module&, const std::vector<Tensor>& in,
          const std::vector<Tensor>&) -> std::optional<std::vector<Tensor>> {
        seen = in[0].detach();
        return std::nullopt;
      });
  weft::Generator gen(1);
  Tensor x = weft::randn({2, 3, 6, 6}, &gen).requires_grad_(true);
  Tensor y = seq(x);
  EXPECT_EQ(y.grad_fn()->name(), "ReluBackward");
  ASSERT_TRUE(seen.defined());
  // Some values are negative: the hook saw the BatchNorm's output, not the ReLU's.
  EXPECT_GT((-seen).max().item<float>(), 0.0f);
  handle.remove();
  EXPECT_EQ(seq(x).grad_fn()->name(), "BatchNormReluBackward");
}
