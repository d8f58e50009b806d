// bf16/fp16 on CUDA and CUDA autocast: PyTorch's bf16 goldens replayed on the GPU (cuBLAS and
// cuDNN on 16-bit data, the other ops through float32), cuBLAS/cuDNN half products against the
// CPU's float32 ones, and CUDA autocast's lists (fp16 by default; losses, softmax, exp, log, pow
// and sum in float32; binary_cross_entropy refused).
#include <gtest/gtest.h>

#include <functional>

#include "bf16_golden.h"
#include "cuda_test.h"
#include "weft/amp.h"
#include "weft/autograd.h"
#include "weft/nn.h"

namespace weft {
namespace {

using namespace test;

TEST(CudaBf16Ops, MatchPyTorch) {
  SKIP_WITHOUT_CUDA();
  check_ops_against_golden(kGpu);
}

TEST(CudaAutocast, Bf16TrainingMatchesPyTorch) {
  SKIP_WITHOUT_CUDA();
  check_autocast_training(kGpu);
}

// The 16-bit elementwise kernels (float math on widened loads, one rounding) against the CPU's
// widened float32 ops, forward and backward, for both 16-bit types. IEEE float arithmetic and
// round-to-nearest are the same on both sides, so the arithmetic ops agree bit for bit (a
// truncating or double rounding would show); the transcendental ones within an ulp.
TEST(CudaAutocast, HalfElementwiseMatchesTheCpu) {
  SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::BFloat16, DType::Float16}) {
    SCOPED_TRACE(dtype_name(dt));
    const double ulp = dt == DType::BFloat16 ? 1.0 / 128 : 1.0 / 1024;
    manual_seed(23);
    Tensor a = randn({33, 17}).to(dt), b = (randn({17}).abs() + 0.5).to(dt);
    using Fn = std::function<Tensor(const Tensor&, const Tensor&)>;
    struct Case {
      std::string name;
      bool exact;
      Fn fn;
    };
    const std::vector<Case> ops = {
        {"add", true, [](auto& x, auto& y) { return x + y; }},
        {"sub", true, [](auto& x, auto& y) { return x - y; }},
        {"mul", true, [](auto& x, auto& y) { return x * y; }},
        {"div", true, [](auto& x, auto& y) { return x / y; }},
        {"relu", true, [](auto& x, auto&) { return x.relu(); }},
        {"scale", true, [](auto& x, auto&) { return x * 0.3 + 1.0; }},
        {"sigmoid", false, [](auto& x, auto&) { return x.sigmoid(); }},
        {"tanh", false, [](auto& x, auto&) { return x.tanh(); }},
    };
    for (const auto& [name, exact, fn] : ops) {
      Tensor ca = a.clone().requires_grad_(true), cb = b.clone().requires_grad_(true);
      Tensor ga = a.to(kGpu).requires_grad_(true), gb = b.to(kGpu).requires_grad_(true);
      Tensor co = fn(ca, cb), go = fn(ga, gb);
      ASSERT_EQ(go.dtype(), dt) << name;
      EXPECT_TRUE(exact ? bit_equal(go.to(Device::CPU()), co) : close(go, co, ulp, name)) << name;
      Tensor gout = randn(co.sizes()).to(dt);
      co.backward(gout);
      go.backward(gout.to(kGpu));
      const Tensor gga = ga.grad().to(Device::CPU());
      // sigmoid' and tanh' read the rounded output: a one-ulp forward difference near |y| = 1
      // moves 1 - y by far more than one ulp of the gradient, so those compare norm-wise.
      EXPECT_TRUE(exact ? bit_equal(gga, ca.grad())
                        : close_normwise(gga, ca.grad(), 4 * ulp, name + " grad a"))
          << name << " grad a";
      if (cb.grad().defined()) {  // summed over the broadcast rows: in another order
        EXPECT_TRUE(close_normwise(gb.grad(), cb.grad(), ulp, name + " grad b"));
      }
    }
  }
}

// cuBLAS and cuDNN on 16-bit data accumulate in float32 and round once, like the CPU's widened
// float32 products: the two differ only in summation order.
TEST(CudaAutocast, HalfProductsMatchTheCpu) {
  SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::BFloat16, DType::Float16}) {
    SCOPED_TRACE(dtype_name(dt));
    manual_seed(21);
    Tensor a = randn({37, 64}).to(dt), b = randn({48, 64}).to(dt);
    Tensor x = randn({4, 8, 9, 9}).to(dt), w = (randn({16, 8, 3, 3}) * 0.2).to(dt);
    Tensor bias = randn({16}).to(dt), p = randn({3, 5, 7}).to(dt), q = randn({3, 7, 4}).to(dt);
    const double ulp = dt == DType::BFloat16 ? 1.0 / 128 : 1.0 / 1024;
    Tensor ga = a.to(kGpu).requires_grad_(true), gb = b.to(kGpu).requires_grad_(true);
    Tensor ca = a.clone().requires_grad_(true), cb = b.clone().requires_grad_(true);
    Tensor gp = mm(ga, gb, false, true), cp = mm(ca, cb, false, true);
    ASSERT_EQ(gp.dtype(), dt);
    EXPECT_TRUE(close_normwise(gp, cp, ulp, "mm"));
    Tensor gout = randn(cp.sizes()).to(dt);
    gp.backward(gout.to(kGpu));
    cp.backward(gout);
    EXPECT_TRUE(close_normwise(ga.grad(), ca.grad(), ulp, "mm grad a"));
    EXPECT_TRUE(close_normwise(gb.grad(), cb.grad(), ulp, "mm grad b"));
    // A transposed view (passed to cuBLAS as a flag) and a batched product (GemmEx per batch).
    Tensor at = a.transpose(0, 1).contiguous();
    EXPECT_TRUE(close_normwise(mm(at.to(kGpu).transpose(0, 1), b.to(kGpu), false, true),
                               mm(at.transpose(0, 1), b, false, true), ulp, "mm of a view"));
    Tensor gpq = matmul(p.to(kGpu), q.to(kGpu));
    ASSERT_EQ(gpq.dtype(), dt);
    EXPECT_TRUE(close_normwise(gpq, matmul(p, q), ulp, "batched matmul"));

    Tensor gx = x.to(kGpu).requires_grad_(true), gw = w.to(kGpu).requires_grad_(true);
    Tensor cx = x.clone().requires_grad_(true), cw = w.clone().requires_grad_(true);
    Tensor gbias = bias.to(kGpu).requires_grad_(true), cbias = bias.clone().requires_grad_(true);
    Tensor gy = nn::functional::conv2d(gx, gw, gbias, {1, 1}, {1, 1});
    Tensor cy = nn::functional::conv2d(cx, cw, cbias, {1, 1}, {1, 1});
    ASSERT_EQ(gy.dtype(), dt);
    EXPECT_TRUE(close_normwise(gy, cy, ulp, "conv2d"));
    Tensor cg = randn(cy.sizes()).to(dt);
    gy.backward(cg.to(kGpu));
    cy.backward(cg);
    EXPECT_TRUE(close_normwise(gx.grad(), cx.grad(), ulp, "conv2d grad x"));
    EXPECT_TRUE(close_normwise(gw.grad(), cw.grad(), 2 * ulp, "conv2d grad w"));
    EXPECT_TRUE(close_normwise(gbias.grad(), cbias.grad(), ulp, "conv2d grad bias"));
  }
}

TEST(CudaAutocast, ListsAsPyTorch) {
  SKIP_WITHOUT_CUDA();
  manual_seed(22);
  nn::Linear fc(6, 4);
  fc->to(kGpu);
  Tensor x = randn({3, 6}).to(kGpu), target = randint(0, 4, {3}).to(kGpu);
  Tensor cpu_x = randn({3, 6});
  amp::autocast region(DeviceType::CUDA);
  EXPECT_EQ(amp::get_autocast_dtype(DeviceType::CUDA), DType::Float16);
  Tensor h = fc(x);
  EXPECT_EQ(h.dtype(), DType::Float16);
  EXPECT_TRUE(
      bit_equal(h, nn::functional::linear(x.to(DType::Float16), fc->weight.to(DType::Float16),
                                          fc->bias.to(DType::Float16))));
  EXPECT_EQ(h.relu().dtype(), DType::Float16);
  EXPECT_EQ(h.mean().dtype(), DType::Float16);  // on no list
  for (const Tensor& t : {h.softmax(1), h.log_softmax(1), h.exp(), h.log(), h.pow(2.0), h.sum()})
    EXPECT_EQ(t.dtype(), kFloat32);
  EXPECT_EQ(nn::functional::cross_entropy(h, target).dtype(), kFloat32);
  EXPECT_EQ(nn::functional::binary_cross_entropy_with_logits(h, h.sigmoid()).dtype(), kFloat32);
  EXPECT_THROW(nn::functional::binary_cross_entropy(h.sigmoid(), h.sigmoid()), Error);
  nn::Linear cpu_fc(6, 4);
  EXPECT_EQ(cpu_fc(cpu_x).dtype(), kFloat32);  // a CUDA region leaves CPU tensors alone
}

}  // namespace
}  // namespace weft
