// Tensor basics: views share storage, broadcasting, reductions, dtype/shape errors, RNG.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "error_message.h"
#include "weft/allocator.h"
#include "weft/autograd.h"
#include "weft/ops.h"

using namespace weft;

TEST(Tensor, FactoriesAndItem) {
  Tensor z = zeros({2, 3});
  EXPECT_EQ(z.sizes(), (Shape{2, 3}));
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(z.sum().item<float>(), 0.0f);
  EXPECT_EQ(ones({4}).sum().item<float>(), 4.0f);
  EXPECT_EQ(arange(5).to_vector_int64(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(full({2}, 3.5).to_vector_float(), (std::vector<float>{3.5f, 3.5f}));
  EXPECT_THROW(ones({2}).item<float>(), Error);
}

TEST(Tensor, ViewsShareStorage) {
  Tensor a = arange(0, 12, 1).reshape({3, 4});
  Tensor t = a.t();
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.sizes(), (Shape{4, 3}));
  EXPECT_EQ(t.contiguous().to_vector_float()[1], 4.0f);  // t[0][1] = a[1][0]
  Tensor row = a.select(0, 1);
  row.fill_(-1);
  EXPECT_EQ(a.to_vector_float()[4], -1.0f);
  EXPECT_EQ(a.narrow(1, 1, 2).sizes(), (Shape{3, 2}));
  EXPECT_EQ(a.slice(1, 0, 4, 2).contiguous().to_vector_float(),
            (std::vector<float>{0, 2, -1, -1, 8, 10}));
  EXPECT_EQ(a.unsqueeze(0).sizes(), (Shape{1, 3, 4}));
  EXPECT_EQ(a.unsqueeze(0).squeeze().sizes(), (Shape{3, 4}));
  EXPECT_EQ(a.permute({1, 0}).sizes(), (Shape{4, 3}));
  EXPECT_EQ(a.view({-1}).numel(), 12);
  EXPECT_THROW(a.t().view({12}), Error);                       // not viewable: needs reshape
  EXPECT_EQ(a.t().reshape({12}).to_vector_float()[1], -1.0f);  // a[1][0], filled above
  EXPECT_THROW(a.view({5, -1}), Error);
}

TEST(Tensor, SplitChunkCatStack) {
  Tensor a = arange(0, 10, 1);
  auto parts = a.split(4);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[2].numel(), 2);
  auto ch = a.chunk(3);
  ASSERT_EQ(ch.size(), 3u);
  EXPECT_EQ(ch[0].numel(), 4);
  EXPECT_EQ(ch[2].numel(), 2);
  EXPECT_EQ(cat(parts).to_vector_float(), a.to_vector_float());
  EXPECT_EQ(stack({a, a}).sizes(), (Shape{2, 10}));
  EXPECT_THROW(cat({zeros({2, 3}), zeros({2, 4})}, 0), Error);
  EXPECT_THROW(stack({zeros({2}), zeros({3})}), Error);
}

TEST(Tensor, BroadcastingAndErrors) {
  Tensor a = ones({3, 1}), b = arange(0, 4, 1);
  Tensor c = a * b;
  EXPECT_EQ(c.sizes(), (Shape{3, 4}));
  EXPECT_EQ(c.sum().item<float>(), 18.0f);
  try {
    (void)(ones({2, 3}) + ones({4}));
    FAIL() << "expected a broadcast error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("(2, 3)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(matmul(ones({2, 3}), ones({4, 2})), Error);
  EXPECT_THROW(ones({2}) + ones({2}).to(Device::CPU(1)), Error);
  // int64 + float promotes to float, as in PyTorch.
  EXPECT_EQ((arange(3) + ones({3})).dtype(), kFloat32);
}

TEST(Tensor, Reductions) {
  Tensor a = arange(0, 6, 1).reshape({2, 3});
  EXPECT_EQ(a.sum({0}).to_vector_float(), (std::vector<float>{3, 5, 7}));
  EXPECT_EQ(a.sum({1}, true).sizes(), (Shape{2, 1}));
  EXPECT_EQ(a.mean().item<float>(), 2.5f);
  EXPECT_EQ(a.argmax(1).to_vector_int64(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(a.max().item<float>(), 5.0f);
  EXPECT_EQ(a.t().sum({1}).to_vector_float(), (std::vector<float>{3, 5, 7}));
}

TEST(Tensor, SeededRandomness) {
  manual_seed(7);
  Tensor a = randn({100});
  manual_seed(7);
  Tensor b = randn({100});
  EXPECT_EQ(a.to_vector_float(), b.to_vector_float());
  Tensor u = rand({10000});
  EXPECT_GE(u.max().item<float>(), 0.99f);
  EXPECT_NEAR(u.mean().item<float>(), 0.5, 0.02);
  Tensor n = randn({20000});
  EXPECT_NEAR(n.mean().item<float>(), 0.0, 0.03);
  EXPECT_NEAR((n * n).mean().item<float>(), 1.0, 0.05);
  auto perm = randperm(50).to_vector_int64();
  std::sort(perm.begin(), perm.end());
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(perm[i], i);
  Tensor r = randint(3, 7, {1000});
  EXPECT_EQ(r.to(kFloat32).max().item<float>(), 6.0f);
  Generator g(5);
  std::string state = g.get_state();
  double x = g.normal();
  g.set_state(state);
  EXPECT_EQ(g.normal(), x);
}

TEST(Tensor, Printing) {
  std::ostringstream os;
  os << tensor(std::vector<float>{1, 2, 3, 4}, {2, 2});
  EXPECT_EQ(os.str(), "tensor([[1.0000, 2.0000],\n        [3.0000, 4.0000]])");
}

TEST(Tensor, InplaceOnLeafRequiringGradIsRefused) {
  Tensor w = ones({3}, {.requires_grad = true});
  EXPECT_THROW(w.add_(ones({3})), Error);
  NoGradGuard ng;
  w.add_(ones({3}));
  EXPECT_EQ(w.sum().item<float>(), 6.0f);
}

// PyTorch's partial-overlap rule: an in-place op whose input is another view of the memory it
// writes is refused (the result would depend on the order elements are visited), and nothing
// is written; the same view, or disjoint views of one storage, are fine.
TEST(Tensor, InplaceFromOverlappingViewIsRefused) {
  Tensor x = arange(30).to(kFloat32).reshape({5, 6});
  const Tensor before = x.clone();
  for (auto f :
       std::vector<std::function<void()>>{[&] { x.add_(x[0]); }, [&] { x.mul_(x.slice(0, 2, 3)); },
                                          [&] { x.slice(0, 1, 5).copy_(x.slice(0, 0, 4)); }}) {
    const std::string m = test::error_message(f);
    EXPECT_NE(m.find("refer to a single memory location"), std::string::npos) << m;
    EXPECT_NE(m.find("the written-to Tensor[float32, ("), std::string::npos) << m;
  }
  EXPECT_EQ(x.to_vector_float(), before.to_vector_float());
  x.mul_(x);
  x[0].copy_(x[1]);
  x.slice(0, 0, 2).add_(x.slice(0, 3, 5));
  Tensor expect = before * before;
  expect[0].copy_(expect[1]);
  expect.slice(0, 0, 2).add_(expect.slice(0, 3, 5).clone());
  EXPECT_EQ(x.to_vector_float(), expect.to_vector_float());
}

// relu's edge values as PyTorch gives them (torch.relu and its backward on these inputs):
// NaN and -0 pass through, and the gradient passes wherever the output is not <= 0.
TEST(Tensor, ReluEdgeValuesAsPyTorch) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (DType dt : {kFloat32, DType::BFloat16, DType::Float16}) {
    Tensor x = tensor(std::vector<float>{-0.0f, 0.0f, nan, -inf, 2.0f, -3.0f}, {6}).to(dt);
    x.requires_grad_();
    Tensor y = x.relu();
    y.backward(ones({6}).to(dt));
    const std::vector<float> v = y.detach().to_vector_float();
    EXPECT_TRUE(v[0] == 0.0f && std::signbit(v[0])) << dtype_name(dt);
    EXPECT_TRUE(v[1] == 0.0f && !std::signbit(v[1]));
    EXPECT_TRUE(std::isnan(v[2]));
    EXPECT_EQ(v[3], 0.0f);
    EXPECT_EQ(v[4], 2.0f);
    EXPECT_EQ(v[5], 0.0f);
    EXPECT_EQ(x.grad().to_vector_float(), (std::vector<float>{0, 0, 1, 0, 1, 0}));
  }
}

// The CPU caching allocator: a large block (4 MiB and more) costs its request rounded to the
// 4 KiB page, and a freed one is reused by a later request it fits within 1/64.
TEST(Allocator, LargeBlocksArePageSizedAndReusedWhenTheyFit) {
  empty_cache();
  const size_t base = cpu_allocator_stats().allocated_bytes;
  const size_t n = (size_t(5) << 20) + 12345, page = 4096;
  void* p = cpu_alloc(n);
  EXPECT_EQ(cpu_allocator_stats().allocated_bytes - base, (n + page - 1) / page * page);
  static_cast<char*>(p)[n - 1] = 1;  // the whole request is usable
  cpu_free(p, n);
  EXPECT_EQ(cpu_allocator_stats().allocated_bytes, base);
  void* q = cpu_alloc(n - n / 128);  // it fits, within 1/64: the same block
  EXPECT_EQ(q, p);
  cpu_free(q, n - n / 128);
  void* r = cpu_alloc(n / 2 * 3);  // too big for it
  EXPECT_NE(r, p);
  void* s = cpu_alloc(n - n / 16);  // the cached block would waste more than 1/64
  EXPECT_NE(s, p);
  cpu_free(r, n / 2 * 3);
  cpu_free(s, n - n / 16);
  EXPECT_EQ(cpu_allocator_stats().allocated_bytes, base);
  empty_cache();
  EXPECT_EQ(cpu_allocator_stats().cached_bytes, size_t(0));
}
