// The fast CPU kernels against their references: conv2d's oneDNN backends against im2col +
// SGEMM on random shapes (groups, stride, dilation, padding), and the vectorised batch-norm
// reductions against double-precision sums, including data whose mean dwarfs its spread, and
// the skinny SGEMM kernels (small batch x large weight) against a double-precision product.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <vector>

#include "ops/cpu/bf16_gemm.h"
#include "ops/cpu/conv.h"
#include "ops/cpu/skinny_gemm.h"
#include "weft/autograd.h"
#include "weft/generator.h"
#include "weft/nn/batch_norm_kernels.h"
#include "weft/nn/functional.h"
#include "weft/ops.h"

namespace F = weft::nn::functional;
using weft::Tensor;
using weft::cpu::ConvBackend;

namespace {

struct ConvCase {
  int64_t N, C, H, W, K, kh, kw, sh, sw, ph, pw, dh, dw, G;
  bool bias, grad_input;
};

struct ConvResult {
  std::vector<float> y, dx, dw, db;
};

ConvResult run_conv(const ConvCase& c, ConvBackend backend, uint64_t seed) {
  weft::cpu::set_conv_backend(backend);
  weft::Generator gen(seed);
  Tensor x = weft::randn({c.N, c.C, c.H, c.W}, &gen).requires_grad_(c.grad_input);
  Tensor w = weft::randn({c.K, c.C / c.G, c.kh, c.kw}, &gen).requires_grad_(true);
  Tensor b = c.bias ? weft::randn({c.K}, &gen).requires_grad_(true) : Tensor();
  Tensor y = F::conv2d(x, w, b, {c.sh, c.sw}, {c.ph, c.pw}, {c.dh, c.dw}, c.G);
  Tensor proj = weft::randn(y.sizes(), &gen);
  (y * proj).sum().backward();
  ConvResult r;
  r.y = y.detach().contiguous().to_vector_float();
  if (c.grad_input) r.dx = x.grad().contiguous().to_vector_float();
  r.dw = w.grad().contiguous().to_vector_float();
  if (c.bias) r.db = b.grad().contiguous().to_vector_float();
  weft::cpu::set_conv_backend(ConvBackend::kAuto);
  return r;
}

// Max |a - b| relative to max(1, max |b|).
double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 1, d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    m = std::max(m, (double)std::fabs(b[i]));
    d = std::max(d, (double)std::fabs(a[i] - b[i]));
  }
  return d / m;
}

}  // namespace

TEST(FastKernels, ConvOneDnnMatchesIm2col) {
  std::vector<ConvCase> cases = {
      {32, 3, 32, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, true, false},  // convbn's first conv
      {4, 32, 16, 16, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, true, true},   // convbn's second, smaller
      {8, 1, 28, 28, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, true, false},   // the example's
      {2, 4, 5, 6, 6, 3, 3, 2, 1, 1, 1, 1, 2, 2, true, true},       // test_autograd's
      {1, 3, 4, 4, 2, 1, 1, 1, 1, 0, 0, 1, 1, 1, false, true},      // pointwise
      {3, 8, 9, 7, 12, 3, 2, 2, 3, 2, 0, 2, 1, 4, false, true},     // odd everything
      {2, 6, 11, 10, 6, 5, 3, 1, 2, 2, 1, 1, 3, 6, true, true},     // depthwise, dilated
      {2, 16, 8, 8, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, false, true},    // Winograd-eligible
  };
  weft::Generator pick(7);
  for (int i = 0; i < 6; ++i) {  // and random ones
    auto r = [&](int64_t lo, int64_t hi) { return pick.randint(lo, hi + 1); };
    ConvCase c{};
    c.G = r(1, 3);
    c.C = c.G * r(1, 4);
    c.K = c.G * r(1, 4);
    c.N = r(1, 3);
    c.kh = r(1, 4), c.kw = r(1, 4), c.sh = r(1, 3), c.sw = r(1, 3);
    c.ph = r(0, 2), c.pw = r(0, 2), c.dh = r(1, 2), c.dw = r(1, 2);
    c.H = (c.kh - 1) * c.dh + r(1, 9);
    c.W = (c.kw - 1) * c.dw + r(1, 9);
    c.bias = r(0, 1), c.grad_input = true;
    cases.push_back(c);
  }
  for (size_t k = 0; k < cases.size(); ++k) {
    const ConvCase& c = cases[k];
    ConvResult ref = run_conv(c, ConvBackend::kIm2col, 100 + k);
    for (ConvBackend be : {ConvBackend::kOneDnn, ConvBackend::kOneDnnWinograd}) {
      ConvResult got = run_conv(c, be, 100 + k);
      SCOPED_TRACE(testing::Message() << "case " << k << " backend " << (int)be);
      EXPECT_LT(rel_diff(got.y, ref.y), 1e-5);
      EXPECT_LT(rel_diff(got.dx, ref.dx), 1e-5);
      EXPECT_LT(rel_diff(got.dw, ref.dw), 1e-5);
      EXPECT_LT(rel_diff(got.db, ref.db), 1e-5);
    }
  }
}

// A training forward keeps its input as reordered for oneDNN, for the backward-weights of the
// same shape (ops/cpu/conv.h). Only that input's backward may use it: with two forwards of one
// shape in flight, and backwards in either order, every weight gradient must still be its own
// input's (against im2col's, which keeps nothing).
TEST(FastKernels, ConvKeptInputServesOnlyItsOwnBackward) {
  for (ConvBackend be : {ConvBackend::kOneDnn, ConvBackend::kOneDnnWinograd}) {
    SCOPED_TRACE(testing::Message() << "backend " << (int)be);
    weft::Generator gen(21);
    Tensor w = weft::randn({32, 16, 3, 3}, &gen).requires_grad_(true);
    std::vector<Tensor> xs, gs;
    for (int i = 0; i < 3; ++i) {
      xs.push_back(weft::randn({2, 16, 8, 8}, &gen));
      gs.push_back(weft::randn({2, 32, 8, 8}, &gen));
    }
    auto dw_of = [&](ConvBackend b, const std::vector<int>& fwd, const std::vector<int>& bwd) {
      weft::cpu::set_conv_backend(b);
      std::vector<Tensor> ys(xs.size());
      for (int i : fwd) ys[i] = F::conv2d(xs[i], w, Tensor(), {1, 1}, {1, 1});
      std::vector<std::vector<float>> dws(xs.size());
      for (int i : bwd) {
        w.mutable_grad() = Tensor();
        (ys[i] * gs[i]).sum().backward();
        dws[i] = w.grad().to_vector_float();
      }
      weft::cpu::set_conv_backend(ConvBackend::kAuto);
      return dws;
    };
    // Forwards 0, 1, 2 then backwards 1, 0, 2: only 2's could find its input kept.
    auto got = dw_of(be, {0, 1, 2}, {1, 0, 2});
    auto want = dw_of(ConvBackend::kIm2col, {0, 1, 2}, {1, 0, 2});
    for (int i = 0; i < 3; ++i) EXPECT_LT(rel_diff(got[i], want[i]), 1e-5) << "input " << i;
    // One forward and its backward, twice: each finds its own input kept.
    auto got2 = dw_of(be, {2}, {2}), got0 = dw_of(be, {0}, {0});
    EXPECT_LT(rel_diff(got2[2], want[2]), 1e-5);
    EXPECT_LT(rel_diff(got0[0], want[0]), 1e-5);
  }
}

// oneDNN's native bf16 convolution (float32 accumulation) against the widened path (float32
// im2col on exact copies): both round the same sums once, so they differ by at most one bf16
// rounding of the output (2^-8 relative), here measured against the largest entry.
TEST(FastKernels, ConvOneDnnBf16MatchesWidened) {
  const std::vector<ConvCase> cases = {
      {32, 3, 32, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, true, false},
      {4, 32, 16, 16, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, true, true},
      {2, 4, 5, 6, 6, 3, 3, 2, 1, 1, 1, 1, 2, 2, true, true},
      {3, 8, 9, 7, 12, 3, 2, 2, 3, 2, 0, 2, 1, 4, false, true},
      {2, 6, 11, 10, 6, 5, 3, 1, 2, 2, 1, 1, 3, 6, true, true},
  };
  const weft::DType bf16 = weft::DType::BFloat16;
  for (size_t k = 0; k < cases.size(); ++k) {
    const ConvCase& c = cases[k];
    SCOPED_TRACE(testing::Message() << "case " << k);
    ConvResult r[2];
    std::string node[2];
    for (int native = 0; native < 2; ++native) {
      weft::cpu::set_conv_backend(native ? ConvBackend::kOneDnn : ConvBackend::kIm2col);
      weft::Generator gen(300 + k);
      Tensor x = weft::randn({c.N, c.C, c.H, c.W}, &gen).to(bf16).requires_grad_(c.grad_input);
      Tensor w = weft::randn({c.K, c.C / c.G, c.kh, c.kw}, &gen).to(bf16).requires_grad_(true);
      Tensor b = c.bias ? weft::randn({c.K}, &gen).to(bf16).requires_grad_(true) : Tensor();
      Tensor y = F::conv2d(x, w, b, {c.sh, c.sw}, {c.ph, c.pw}, {c.dh, c.dw}, c.G);
      ASSERT_EQ(y.dtype(), bf16);
      node[native] = y.grad_fn()->name();
      y.backward(weft::randn(y.sizes(), &gen).to(bf16));
      ASSERT_EQ(w.grad().dtype(), bf16);
      r[native].y = y.detach().to_vector_float();
      if (c.grad_input) r[native].dx = x.grad().to_vector_float();
      r[native].dw = w.grad().to_vector_float();
      if (c.bias) r[native].db = b.grad().to_vector_float();
      weft::cpu::set_conv_backend(ConvBackend::kAuto);
    }
    // On a CPU with bf16 instructions oneDNN has native kernels, so the bf16 node is used.
    if (__builtin_cpu_supports("avx512bf16")) {
      EXPECT_EQ(node[1], "ConvolutionBackward");
    }
    EXPECT_EQ(node[0], "ToCopyBackward");
    const double tol = 1.0 / 256;
    EXPECT_LT(rel_diff(r[1].y, r[0].y), tol);
    EXPECT_LT(rel_diff(r[1].dx, r[0].dx), tol);
    EXPECT_LT(rel_diff(r[1].dw, r[0].dw), tol);
    EXPECT_LT(rel_diff(r[1].db, r[0].db), tol);
  }
}

// oneDNN's native bf16 products (float32 accumulation) against float32 products of the same
// values rounded once: they differ only by summation order, within one bf16 rounding of the
// largest entry. Every transpose combination, skinny (Linear at batch 16) and odd shapes, and
// Linear with its bias fused, forward and backward.
TEST(FastKernels, Bf16GemmMatchesWidened) {
  const weft::DType bf16 = weft::DType::BFloat16;
  const double tol = 1.0 / 256;
  weft::Generator gen(17);
  for (auto [M, N, K] :
       std::vector<std::array<int64_t, 3>>{{16, 512, 1024}, {5, 7, 3}, {64, 33, 129}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        SCOPED_TRACE(testing::Message()
                     << M << "x" << N << "x" << K << " ta " << ta << " tb " << tb);
        Tensor a = weft::randn(ta ? weft::Shape{K, M} : weft::Shape{M, K}, &gen).to(bf16);
        Tensor b = weft::randn(tb ? weft::Shape{N, K} : weft::Shape{K, N}, &gen).to(bf16);
        if (__builtin_cpu_supports("avx512bf16")) {  // oneDNN has native kernels for these
          Tensor c = weft::make_empty({M, N}, bf16);
          EXPECT_TRUE(weft::cpu::bf16_gemm(ta, tb, M, N, K,
                                           static_cast<const uint16_t*>(a.raw_data()), ta ? M : K,
                                           static_cast<const uint16_t*>(b.raw_data()), tb ? K : N,
                                           static_cast<uint16_t*>(c.raw_data()), N));
        }
        Tensor got = weft::mm(a, b, ta, tb);
        ASSERT_EQ(got.dtype(), bf16);
        Tensor ref = weft::mm(a.to(weft::kFloat32), b.to(weft::kFloat32), ta, tb).to(bf16);
        EXPECT_LT(rel_diff(got.to_vector_float(), ref.to_vector_float()), tol);
      }
  Tensor x = weft::randn({16, 300}, &gen).to(bf16).requires_grad_();
  Tensor w = weft::randn({70, 300}, &gen).to(bf16).requires_grad_();
  Tensor b = weft::randn({70}, &gen).to(bf16).requires_grad_();
  Tensor y = F::linear(x, w, b);
  if (__builtin_cpu_supports("avx512bf16")) {
    EXPECT_EQ(y.grad_fn()->name(), "AddmmBackward");  // the native path, not widened copies
  }
  Tensor gout = weft::randn({16, 70}, &gen).to(bf16);
  y.backward(gout);
  Tensor xf = x.detach().to(weft::kFloat32).requires_grad_();
  Tensor wf = w.detach().to(weft::kFloat32).requires_grad_();
  Tensor bf = b.detach().to(weft::kFloat32).requires_grad_();
  Tensor yf = F::linear(xf, wf, bf);
  yf.backward(gout.to(weft::kFloat32));
  auto rounded = [&](const Tensor& t) { return t.to(bf16).to_vector_float(); };
  EXPECT_LT(rel_diff(y.to_vector_float(), rounded(yf)), tol);
  EXPECT_LT(rel_diff(x.grad().to_vector_float(), rounded(xf.grad())), tol);
  EXPECT_LT(rel_diff(w.grad().to_vector_float(), rounded(wf.grad())), tol);
  EXPECT_LT(rel_diff(b.grad().to_vector_float(), rounded(bf.grad())), tol);
}

TEST(FastKernels, BatchNormReductionsMatchDouble) {
  // Long rows (S >= 32, vectorised per row) and short ones (S < 32, across n), data offset by
  // 1000 with spread 1: a one-pass E[x^2] - E[x]^2 in float would lose the variance entirely.
  for (auto shape : std::vector<weft::Shape>{{8, 3, 40, 33}, {16, 5, 7}, {64, 4}, {2, 3, 1}}) {
    weft::Generator gen(3);
    Tensor x = weft::randn(shape, &gen) + 1000.0;
    Tensor dy = weft::randn(shape, &gen);
    const int64_t N = shape[0], C = shape[1], S = x.numel() / (N * C);
    auto st = weft::nn::detail::batch_norm_stats(x);
    auto [sdy, sdyx] = weft::nn::detail::batch_norm_backward_reduce(dy, x, st.mean);
    auto xv = x.to_vector_float(), dv = dy.to_vector_float();
    auto mv = st.mean.to_vector_float(), vv = st.var.to_vector_float();
    auto s1 = sdy.to_vector_float(), s2 = sdyx.to_vector_float();
    for (int64_t c = 0; c < C; ++c) {
      double sum = 0, sq = 0, a = 0, b = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t s = 0; s < S; ++s) sum += xv[(n * C + c) * S + s];
      const double mu = sum / (double)(N * S);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t s = 0; s < S; ++s) {
          const int64_t i = (n * C + c) * S + s;
          sq += (xv[i] - mu) * (xv[i] - mu);
          a += dv[i];
          b += dv[i] * (xv[i] - (double)mv[c]);
        }
      const double var = sq / (double)(N * S);
      SCOPED_TRACE(testing::Message() << "shape " << weft::shape_str(shape) << " c " << c);
      EXPECT_NEAR(mv[c], mu, 1e-6 * std::fabs(mu));
      EXPECT_NEAR(vv[c], var, 1e-5 * var);
      EXPECT_NEAR(s1[c], a, 1e-5 * (1 + std::fabs(a)));
      EXPECT_NEAR(s2[c], b, 1e-5 * (1 + std::fabs(b)));
    }
  }
}

// C = beta C + op(A) op(B) in double, cblas conventions (row-major, leading dimensions).
std::vector<float> gemm_reference(bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                                  const std::vector<float>& A, int64_t lda,
                                  const std::vector<float>& B, int64_t ldb, float beta,
                                  std::vector<float> C, int64_t ldc) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k)
        s += (double)A[ta ? k * lda + m : m * lda + k] * B[tb ? n * ldb + k : k * ldb + n];
      C[m * ldc + n] = (float)(beta * C[m * ldc + n] + s);
    }
  return C;
}

TEST(FastKernels, SkinnyGemmMatchesDouble) {
  weft::Generator gen(7);
  auto random = [&](int64_t n) { return weft::randn({n}, &gen).to_vector_float(); };
  struct Case {
    bool ta, tb;
    int64_t M, N, K;
  };
  // Linear's three products at batch sizes around the tile edges (4, 8, 16 rows; 16-float
  // vectors; 48- and 64-column blocks), with leading dimensions wider than the matrices.
  std::vector<Case> cases;
  for (int64_t small : {1, 3, 8, 13, 16, 17, 32})
    for (int64_t big : {64, 100, 257}) {
      cases.push_back({false, true, small, big, 96 + big % 7});  // x W^T
      cases.push_back({false, false, small, big, 70});           // dy W
      cases.push_back({true, false, big, 93, small});            // dy^T x
    }
  for (const Case& c : cases)
    for (float beta : {0.0f, 1.0f}) {
      const int64_t ar = c.ta ? c.K : c.M, ac = c.ta ? c.M : c.K;
      const int64_t br = c.tb ? c.N : c.K, bc = c.tb ? c.K : c.N;
      const int64_t lda = ac + 3, ldb = bc + 5, ldc = c.N + 2;
      std::vector<float> A = random(ar * lda), B = random(br * ldb), C = random(c.M * ldc);
      std::vector<float> want =
          gemm_reference(c.ta, c.tb, c.M, c.N, c.K, A, lda, B, ldb, beta, C, ldc);
      ASSERT_TRUE(weft::cpu::skinny_sgemm(c.ta, c.tb, c.M, c.N, c.K, A.data(), lda, B.data(), ldb,
                                          beta, C.data(), ldc))
          << "ta=" << c.ta << " tb=" << c.tb << " M=" << c.M << " N=" << c.N << " K=" << c.K;
      EXPECT_LT(rel_diff(C, want), 1e-5) << "ta=" << c.ta << " tb=" << c.tb << " M=" << c.M
                                         << " N=" << c.N << " K=" << c.K << " beta=" << beta;
    }
  // Shapes it does not take are left to BLAS, untouched.
  std::vector<float> A(64 * 64, 1.0f), C(64 * 64, 5.0f);
  EXPECT_FALSE(weft::cpu::skinny_sgemm(false, true, 64, 64, 64, A.data(), 64, A.data(), 64, 0.0f,
                                       C.data(), 64));
  EXPECT_FALSE(weft::cpu::skinny_sgemm(true, true, 4, 64, 64, A.data(), 4, A.data(), 64, 0.0f,
                                       C.data(), 64));
  EXPECT_EQ(C[0], 5.0f);
}

TEST(FastKernels, LinearOnSkinnyKernelsMatchesDouble) {
  // Batch 5 through a 300 -> 200 Linear: forward, input and weight gradients all take the
  // skinny kernels; compared with double-precision sums over the same values.
  weft::Generator gen(3);
  Tensor x = weft::randn({5, 300}, &gen).requires_grad_(true);
  Tensor w = weft::randn({200, 300}, &gen).requires_grad_(true);
  Tensor b = weft::randn({200}, &gen).requires_grad_(true);
  Tensor g = weft::randn({5, 200}, &gen);
  Tensor y = F::linear(x, w, b);
  y.backward(g);
  auto xv = x.detach().to_vector_float(), wv = w.detach().to_vector_float();
  auto bv = b.detach().to_vector_float(), gv = g.to_vector_float();
  std::vector<float> y_want(5 * 200), dx_want(5 * 300), dw_want(200 * 300);
  for (int m = 0; m < 5; ++m)
    for (int n = 0; n < 200; ++n) y_want[m * 200 + n] = bv[n];
  y_want = gemm_reference(false, true, 5, 200, 300, xv, 300, wv, 300, 1.0f, y_want, 200);
  dx_want = gemm_reference(false, false, 5, 300, 200, gv, 200, wv, 300, 0.0f, dx_want, 300);
  dw_want = gemm_reference(true, false, 200, 300, 5, gv, 200, xv, 300, 0.0f, dw_want, 300);
  EXPECT_LT(rel_diff(y.detach().to_vector_float(), y_want), 1e-5);
  EXPECT_LT(rel_diff(x.grad().to_vector_float(), dx_want), 1e-5);
  EXPECT_LT(rel_diff(w.grad().to_vector_float(), dw_want), 1e-5);
}

TEST(FastKernels, BatchNormLargeOutputsMatchComposite) {
  // 16 MB and larger outputs are written with streaming stores (row starts not 64-byte
  // aligned here: S = 1000); forward and input gradient against the same formula built from
  // differentiable elementwise ops and reductions.
  weft::Generator gen(11);
  Tensor x = weft::randn({2, 3, 1000, 700}, &gen).requires_grad_(true);
  Tensor w = weft::randn({3}, &gen).requires_grad_(true);
  Tensor b = weft::randn({3}, &gen).requires_grad_(true);
  Tensor dy = weft::randn(x.sizes(), &gen);
  Tensor y = F::batch_norm(x, Tensor(), Tensor(), w, b, true, 0.1, 1e-5);
  y.backward(dy);
  Tensor dx = x.grad();
  x.mutable_grad() = Tensor();
  Tensor mean = x.mean({0, 2, 3}, true);
  Tensor var = ((x - mean) * (x - mean)).mean({0, 2, 3}, true);
  Tensor ref = (x - mean) * (var + 1e-5).pow(-0.5) * w.view({1, 3, 1, 1}) + b.view({1, 3, 1, 1});
  ref.backward(dy);
  EXPECT_LT(rel_diff(y.detach().to_vector_float(), ref.detach().to_vector_float()), 1e-5);
  EXPECT_LT(rel_diff(dx.to_vector_float(), x.grad().to_vector_float()), 1e-4);
}

// max_pool2d's 2x2 stride-2 path against a plain loop with PyTorch's rules (the first maximum
// of a window in row-major order; a NaN always taken, so the last NaN wins), through the
// gradient, which flows to each window's chosen element only. Few distinct values force ties.
TEST(FastKernels, MaxPool2x2MatchesPlainLoop) {
  for (auto [N, C, H, W] : {std::array<int64_t, 4>{2, 3, 28, 28}, {1, 2, 7, 9}, {3, 1, 2, 2}}) {
    weft::Generator gen(7);
    Tensor r = weft::randint(0, 5, {N, C, H, W}, &gen);
    std::vector<float> v(static_cast<size_t>(r.numel()));
    for (size_t i = 0; i < v.size(); ++i)
      v[i] = i % 11 == 3 ? NAN : static_cast<float>(r.data_ptr<int64_t>()[i]);
    Tensor x = weft::tensor(v, {N, C, H, W}).requires_grad_(true);
    Tensor y = F::max_pool2d(x, {2, 2}, {2, 2});
    const int64_t Ho = H / 2, Wo = W / 2;
    ASSERT_EQ(y.sizes(), (weft::Shape{N, C, Ho, Wo}));
    Tensor gy = weft::randn({N, C, Ho, Wo}, &gen);
    weft::autograd::backward({y}, {gy});
    std::vector<float> want_dx(v.size(), 0.0f);
    const float* py = y.data_ptr<float>();
    for (int64_t nc = 0; nc < N * C; ++nc)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          float best = -INFINITY;
          int64_t at = nc * H * W + 2 * oh * W + 2 * ow;
          for (int64_t i = 2 * oh; i < 2 * oh + 2; ++i)
            for (int64_t j = 2 * ow; j < 2 * ow + 2; ++j) {
              const float c = v[static_cast<size_t>(nc * H * W + i * W + j)];
              if (std::isnan(c) || c > best) {
                best = c;
                at = nc * H * W + i * W + j;
              }
            }
          const int64_t o = (nc * Ho + oh) * Wo + ow;
          const float got = py[o];
          EXPECT_TRUE(std::isnan(best) ? std::isnan(got) : got == best) << "output " << o;
          want_dx[static_cast<size_t>(at)] += gy.data_ptr<float>()[o];
        }
    const std::vector<float> dx = x.grad().to_vector_float();
    for (size_t i = 0; i < dx.size(); ++i) ASSERT_EQ(dx[i], want_dx[i]) << "dx " << i;
  }
}

// bf16 max pooling (taken as it is by the CPU kernels) against the float32 path on the widened
// values, bit for bit, forward and backward: 2x2 windows (the vector kernel; copies of the
// gradient), and overlapping 3x3 windows at stride 2 (added in float32). Gradients include -0.
TEST(FastKernels, MaxPoolBf16EqualsWidenedFloat32) {
  struct Case {
    weft::Shape shape;
    std::array<int64_t, 2> k, s, p;
  };
  const Case cases[] = {{{2, 3, 28, 28}, {2, 2}, {2, 2}, {0, 0}},
                        {{1, 2, 7, 9}, {2, 2}, {2, 2}, {0, 0}},
                        {{2, 2, 9, 9}, {3, 3}, {2, 2}, {1, 1}}};
  const auto bits = [](const Tensor& t) {
    const auto* b = static_cast<const uint16_t*>(t.raw_data());
    return std::vector<uint16_t>(b, b + t.numel());
  };
  for (const Case& c : cases) {
    weft::Generator gen(11);
    std::vector<float> v = weft::randint(-4, 4, c.shape, &gen).to(weft::kFloat32).to_vector_float();
    for (size_t i = 0; i < v.size(); ++i) v[i] = i % 13 == 5 ? NAN : v[i] * 0.37f;
    Tensor x32 = weft::tensor(v, c.shape).to(weft::DType::BFloat16).to(weft::kFloat32);
    Tensor xb = x32.to(weft::DType::BFloat16).requires_grad_(true);
    Tensor xf = x32.clone().requires_grad_(true);
    Tensor yb = F::max_pool2d(xb, c.k, c.s, c.p), yf = F::max_pool2d(xf, c.k, c.s, c.p);
    ASSERT_EQ(yb.dtype(), weft::DType::BFloat16);
    EXPECT_EQ(bits(yb), bits(yf.to(weft::DType::BFloat16))) << yb.str();
    std::vector<float> g = weft::randn(yb.sizes(), &gen).to_vector_float();
    for (size_t i = 0; i < g.size(); ++i) g[i] = i % 7 == 2 ? -0.0f : g[i];
    Tensor gb = weft::tensor(g, yb.sizes()).to(weft::DType::BFloat16);
    weft::autograd::backward({yb}, {gb});
    weft::autograd::backward({yf}, {gb.to(weft::kFloat32)});
    ASSERT_EQ(xb.grad().dtype(), weft::DType::BFloat16);
    EXPECT_EQ(bits(xb.grad()), bits(xf.grad().to(weft::DType::BFloat16))) << xb.str();
  }
}
