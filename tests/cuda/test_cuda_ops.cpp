// The CUDA backend's tensors and ops, cross-checked against the CPU: runtime (streams, events),
// host<->device copies (pinned, non-blocking, strided, dtype conversions), the caching
// allocator on a real device, every elementwise/reduction/softmax kernel and its gradient
// (contiguous, strided, broadcast, vectorised and tail paths), shapes, cuBLAS matmul,
// ChannelShuffle, the fused optimizers, Module::to and checkpoints, and the op goldens of
// tests/golden on CUDA. Each test skips without a CUDA device.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>
#include <sstream>

#include "cuda_test.h"
#include "golden.h"
#include "weft/autograd.h"
#include "weft/cuda.h"
#include "weft/data.h"
#include "weft/nn.h"
#include "weft/nn/channel_shuffle.h"
#include "weft/nn/parallel/parallel_apply.h"
#include "weft/optim.h"
#include "weft/serialize.h"

using namespace weft;
using weft::test::close;
using weft::test::Golden;
using weft::test::kRtol;

namespace {

using weft::test::host;
using weft::test::kGpu;
Tensor gpu(const Tensor& t) { return t.detach().to(kGpu); }

// CUDA result `got` against the CPU's `want` (both any device), elementwise.
::testing::AssertionResult same(const Tensor& got, const Tensor& want, double rtol = 1e-5,
                                double atol = 1e-6) {
  if (got.sizes() != want.sizes())
    return ::testing::AssertionFailure()
           << "shapes " << shape_str(got.sizes()) << " vs " << shape_str(want.sizes());
  const double d = max_rel_diff(host(got), host(want), rtol, atol);
  if (d <= 1.0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max relative difference ratio " << d;
}

// fn on CPU and on CUDA copies of `inputs` (leaves requiring grad): outputs and, through a
// random output gradient, input gradients must agree.
void cross_check(const std::string& what, const std::vector<Tensor>& inputs,
                 const std::function<Tensor(const std::vector<Tensor>&)>& fn, double rtol = 1e-5) {
  SCOPED_TRACE(what);
  std::vector<Tensor> c, g;
  for (const Tensor& t : inputs) {
    c.push_back(t.detach().clone().requires_grad_(t.dtype() == kFloat32));
    g.push_back(gpu(t).requires_grad_(t.dtype() == kFloat32));
  }
  Tensor oc = fn(c), og = fn(g);
  ASSERT_EQ(og.device(), kGpu);
  // An absolute floor that scales with rtol: entries that cancel to ~0 keep the summation
  // order's rounding (cuBLAS and OpenBLAS add in different orders).
  ASSERT_TRUE(same(og, oc, rtol, rtol * 0.1));
  if (!oc.requires_grad()) return;
  Tensor gout = randn(oc.sizes());
  oc.backward(gout);
  og.backward(gpu(gout));
  for (size_t i = 0; i < c.size(); ++i) {
    if (!c[i].grad().defined()) continue;
    ASSERT_TRUE(g[i].grad().defined()) << "input " << i;
    EXPECT_EQ(g[i].grad().device(), kGpu);
    EXPECT_TRUE(same(g[i].grad(), c[i].grad(), rtol, rtol * 0.1)) << "gradient of input " << i;
  }
}

Tensor positive(const Shape& s) { return rand(s) + 0.1; }

// Notes cuda:0's current stream in the thread that runs its forward.
class StreamProbeImpl : public nn::Cloneable<StreamProbeImpl> {
 public:
  StreamProbeImpl() : Cloneable("StreamProbe") {}
  void reset() override {}
  Tensor forward(const Tensor& x) override {
    seen = cuda::current_stream(0);
    return x * 2.0;
  }
  std::optional<cuda::Stream> seen;
};

}  // namespace

TEST(CudaRuntime, DevicesStreamsEvents) {
  SKIP_WITHOUT_CUDA();
  EXPECT_GE(cuda::device_count(), 1);
  EXPECT_EQ(cuda::current_stream(0), cuda::default_stream(0));
  cuda::Stream side = cuda::stream_from_pool(0);
  EXPECT_NE(side.handle(), nullptr);
  {
    cuda::StreamGuard g(side);
    EXPECT_EQ(cuda::current_stream(0), side);
    Tensor x = ones({1 << 20}, {.device = kGpu});  // queued on `side`
    cuda::Event start(true), end(true);
    start.record(side);
    x.mul_(3.0);
    end.record(side);
    end.synchronize();
    EXPECT_TRUE(end.query());
    EXPECT_GE(start.elapsed_time(end), 0.0f);
    EXPECT_FLOAT_EQ(x.sum().item<float>(), 3.0f * (1 << 20));
    cuda::record_stream(x, side);
  }
  EXPECT_EQ(cuda::current_stream(0), cuda::default_stream(0));
  cuda::synchronize();
  EXPECT_THROW(cuda::default_stream(cuda::device_count()), Error);
}

TEST(CudaRuntime, WorkerThreadsQueueOnTheCallersStreams) {
  // A fresh thread starts on the default streams, which a non-blocking side stream does not wait
  // for: parallel_apply's replicas and the engine's device workers must take the caller's.
  SKIP_WITHOUT_CUDA();
  const cuda::Stream side = cuda::stream_from_pool(0);
  cuda::StreamGuard guard(side);
  auto a = std::make_shared<StreamProbeImpl>(), b = std::make_shared<StreamProbeImpl>();
  const Tensor x = randn({5}).to(kGpu);
  auto out = nn::parallel::parallel_apply({a, b}, {{x}, {x}}, {kGpu, kGpu});
  ASSERT_TRUE(a->seen && b->seen);
  EXPECT_EQ(*a->seen, side);
  EXPECT_EQ(*b->seen, side);  // replica 1 ran in a thread of its own
  EXPECT_TRUE(same(out[1][0], x * 2.0));
  // A graph over the CPU and cuda:0: the CPU's worker, a thread of its own, runs the leaf's
  // accumulation and hooks with the caller's stream of cuda:0 current.
  Tensor leaf = randn({3}).requires_grad_();
  std::optional<cuda::Stream> in_hook;
  leaf.register_post_accumulate_grad_hook([&](Tensor&) { in_hook = cuda::current_stream(0); });
  (leaf.to(kGpu) * 3.0).sum().backward();
  ASSERT_TRUE(in_hook.has_value());
  EXPECT_EQ(*in_hook, side);
  EXPECT_TRUE(close(leaf.grad(), full({3}, 3.0), 1e-6, "leaf grad"));
  side.synchronize();
}

TEST(CudaTensor, HostDeviceCopies) {
  SKIP_WITHOUT_CUDA();
  Tensor a = randn({5, 7});
  Tensor d = a.to(kGpu);
  EXPECT_EQ(d.device(), kGpu);
  EXPECT_EQ(host(d).to_vector_float(), a.to_vector_float());
  EXPECT_EQ(d.to_vector_float(), a.to_vector_float());  // to_vector copies from any device
  EXPECT_THROW(d.data_ptr<float>(), Error);             // no host access to device memory
  EXPECT_FLOAT_EQ(d[2][3].item<float>(), a[2][3].item<float>());
  // Strided sources and destinations, both directions.
  EXPECT_TRUE(same(a.t().to(kGpu), a.t()));
  EXPECT_TRUE(same(host(d.t()), a.t()));
  Tensor dst = zeros({7, 5}, {.device = kGpu});
  dst.t().copy_(a);  // CPU source into a transposed CUDA view
  EXPECT_TRUE(same(dst, a.t()));
  Tensor hdst = zeros({7, 5});
  hdst.t().copy_(d);  // CUDA source into a transposed CPU view
  EXPECT_TRUE(same(hdst, a.t()));
  // Broadcast source, dtype conversions across devices and on the device.
  Tensor row = tensor(std::vector<float>{1.5f, -2.75f, 3.f}, {3});
  Tensor big = zeros({4, 3}, {.device = kGpu});
  big.copy_(row);
  EXPECT_TRUE(same(big, row.expand({4, 3}).contiguous()));
  Tensor ints = tensor(std::vector<int64_t>{-3, 0, 7, 1 << 20}, {4});
  EXPECT_EQ(ints.to(kGpu).to(kFloat32).to_vector_float(), ints.to(kFloat32).to_vector_float());
  Tensor f = tensor(std::vector<float>{-2.7f, -0.5f, 0.5f, 2.7f}, {4});
  EXPECT_EQ(f.to(kGpu).to(kInt64).to_vector_int64(), f.to(kInt64).to_vector_int64());
  Tensor exact = tensor(std::vector<float>{0.5f, -1.0f, 2.0f, 1024.0f},
                        {4});  // representable in fp16 and bf16
  for (DType h : {DType::Float16, DType::BFloat16})
    EXPECT_EQ(exact.to(kGpu).to(h).to(kFloat32).to_vector_float(), exact.to_vector_float());
  // 1 + 2^-9 rounds to 1 in bf16 (8 bits of mantissa) but not in fp16 (11).
  Tensor fine = tensor(std::vector<float>{1.0f + 1.0f / 512}, {1}).to(kGpu);
  EXPECT_EQ(fine.to(DType::BFloat16).to(kFloat32).item<float>(), 1.0f);
  EXPECT_EQ(fine.to(DType::Float16).to(kFloat32).item<float>(), 1.0f + 1.0f / 512);
  std::ostringstream os;
  os << d[0][0];
  EXPECT_NE(os.str().find("device=cuda:0"), std::string::npos) << os.str();
}

TEST(CudaTensor, PinnedAndNonBlockingCopies) {
  SKIP_WITHOUT_CUDA();
  Tensor a = randn({256, 1024});
  Tensor p = a.pin_memory();
  EXPECT_TRUE(p.is_pinned());
  EXPECT_FALSE(a.is_pinned());
  EXPECT_EQ(p.to_vector_float(), a.to_vector_float());
  Tensor d = p.to(kGpu, /*non_blocking=*/true);
  Tensor back = make_empty_pinned(a.sizes(), kFloat32);
  back.copy_(d, /*non_blocking=*/true);
  cuda::current_stream(0).synchronize();
  EXPECT_EQ(back.to_vector_float(), a.to_vector_float());
  EXPECT_THROW(d.pin_memory(), Error);
  // Freed pinned blocks are reused (by size) once their copies are done.
  void* first = nullptr;
  {
    Tensor q = make_empty_pinned({123457}, kFloat32);  // a size no other test pins
    first = q.device_ptr();
  }
  Tensor r = make_empty_pinned({123457}, kFloat32);
  EXPECT_EQ(r.device_ptr(), first);
}

TEST(CudaTensor, DataLoaderPinsBatches) {
  SKIP_WITHOUT_CUDA();
  data::TensorDataset ds(randn({10, 3}), arange(10));
  data::DataLoader loader(ds, {.batch_size = 4, .num_workers = 1, .pin_memory = true});
  int batches = 0;
  for (auto& [x, y] : loader) {
    EXPECT_TRUE(x.is_pinned());
    EXPECT_TRUE(y.is_pinned());
    Tensor xd = x.to(kGpu, true);
    EXPECT_TRUE(same(xd, x));
    ++batches;
  }
  EXPECT_EQ(batches, 3);
}

TEST(CudaAllocator, CachesBlocksAndReportsMemory) {
  SKIP_WITHOUT_CUDA();
  cuda::synchronize();
  const auto s0 = cuda::memory_stats(0);
  {
    Tensor a = empty({1 << 20}, {.device = kGpu});  // 4 MiB: a 20 MiB segment
    const auto s1 = cuda::memory_stats(0);
    EXPECT_EQ(s1.allocated_bytes, s0.allocated_bytes + (4u << 20));
    EXPECT_GE(s1.peak_allocated_bytes, s1.allocated_bytes);
    EXPECT_GE(s1.reserved_bytes, s1.allocated_bytes);
  }
  EXPECT_EQ(cuda::memory_stats(0).allocated_bytes, s0.allocated_bytes);
  // A warm "training step" takes nothing new from cudaMalloc.
  auto step = [] {
    Tensor x = randn({256, 512}).to(kGpu);
    Tensor y = (x * 2.0 + 1.0).relu().sum({1});
    return y.sum().item<float>();
  };
  step();
  const uint64_t mallocs = cuda::memory_stats(0).raw_mallocs;
  for (int i = 0; i < 5; ++i) step();
  EXPECT_EQ(cuda::memory_stats(0).raw_mallocs, mallocs);
  cuda::reset_peak_memory_stats(0);
  EXPECT_EQ(cuda::memory_stats(0).peak_allocated_bytes, cuda::memory_stats(0).allocated_bytes);
  const size_t reserved = cuda::memory_stats(0).reserved_bytes;
  cuda::empty_cache();
  const auto s2 = cuda::memory_stats(0);
  EXPECT_LT(s2.reserved_bytes, reserved);  // the step's segments went back to CUDA
  EXPECT_GE(s2.raw_frees, 1u);
  EXPECT_EQ(s2.cached_bytes, s2.reserved_bytes - s2.allocated_bytes);
}

TEST(CudaOps, UnaryMatchCpuWithGradients) {
  SKIP_WITHOUT_CUDA();
  manual_seed(1);
  for (const Shape& s : {Shape{37}, Shape{1 << 16}, Shape{(1 << 16) + 3}, Shape{3, 4, 5}}) {
    Tensor x = randn(s), xp = positive(s);
    cross_check("neg", {x}, [](auto& v) { return -v[0]; });
    cross_check("exp", {x}, [](auto& v) { return v[0].exp(); });
    cross_check("log", {xp}, [](auto& v) { return v[0].log(); });
    cross_check("sqrt", {xp}, [](auto& v) { return v[0].sqrt(); });
    cross_check("abs", {x}, [](auto& v) { return v[0].abs(); });
    cross_check("pow", {xp}, [](auto& v) { return v[0].pow(2.5); });
    cross_check("relu", {x}, [](auto& v) { return v[0].relu(); });
    cross_check("sigmoid", {x}, [](auto& v) { return v[0].sigmoid(); });
    cross_check("tanh", {x}, [](auto& v) { return v[0].tanh(); });
    cross_check("clamp", {x}, [](auto& v) { return v[0].clamp(-0.5, 0.75); });
    cross_check("clamp_min", {x}, [](auto& v) { return v[0].clamp(0.1, std::nullopt); });
    cross_check("scalars", {x}, [](auto& v) { return (v[0] + 2.0) * 3.0 / 4.0 - 1.5; });
    cross_check("rsub_rdiv", {xp}, [](auto& v) { return 2.0 - 3.0 / v[0]; });
  }
  // Strided and offset (unaligned) inputs take the indexed and scalar paths.
  Tensor m = randn({33, 65});
  cross_check("transposed", {m}, [](auto& v) { return v[0].t().sigmoid(); });
  cross_check("offset", {m}, [](auto& v) { return v[0].reshape({-1}).narrow(0, 1, 2000).exp(); });
  cross_check("sliced", {m}, [](auto& v) { return v[0].slice(1, 1, 65, 3).tanh(); });
}

TEST(CudaOps, BinaryBroadcastAndInPlace) {
  SKIP_WITHOUT_CUDA();
  manual_seed(2);
  const std::pair<Shape, Shape> shapes[] = {
      {{1000}, {1000}}, {{4, 1, 5}, {3, 5}}, {{6, 7}, {7}}, {{6, 7}, {}}, {{2, 3, 4}, {2, 1, 4}}};
  for (auto& [sa, sb] : shapes) {
    Tensor a = randn(sa), b = positive(sb);
    cross_check("add", {a, b}, [](auto& v) { return v[0] + v[1]; });
    cross_check("add_alpha", {a, b}, [](auto& v) { return add(v[0], v[1], 0.37); });
    cross_check("sub", {a, b}, [](auto& v) { return v[0] - v[1]; });
    cross_check("mul", {a, b}, [](auto& v) { return v[0] * v[1]; });
    cross_check("div", {a, b}, [](auto& v) { return v[0] / v[1]; });
  }
  Tensor ia = randint(-50, 50, {4, 6}), ib = randint(-50, 50, {6});
  EXPECT_EQ((gpu(ia) + gpu(ib)).to_vector_int64(), (ia + ib).to_vector_int64());
  EXPECT_EQ((gpu(ia) - gpu(ib)).to_vector_int64(), (ia - ib).to_vector_int64());
  EXPECT_EQ((gpu(ia) * gpu(ib)).to_vector_int64(), (ia * ib).to_vector_int64());
  EXPECT_EQ(gpu(ia).eq(gpu(ib)).to_vector_int64(), ia.eq(ib).to_vector_int64());
  Tensor fa = randn({8}), fb = fa.clone();
  fb.narrow(0, 2, 3).mul_(2.0);
  EXPECT_EQ(gpu(fa).eq(gpu(fb)).to_vector_int64(), fa.eq(fb).to_vector_int64());
  EXPECT_TRUE(same(gpu(ia) + gpu(fa.narrow(0, 0, 6)), ia + fa.narrow(0, 0, 6)));  // promotion
  // In place, with broadcasting and alpha.
  Tensor x = randn({5, 6}), y = randn({6}), xd = gpu(x);
  x.add_(y, -0.5);
  xd.add_(gpu(y), -0.5);
  x.mul_(y);
  xd.mul_(gpu(y));
  x.add_(1.25);
  xd.add_(1.25);
  x.mul_(-3.0);
  xd.mul_(-3.0);
  x.t().add_(y.narrow(0, 0, 5).unsqueeze(0).expand({6, 5}));  // strided destination
  xd.t().add_(gpu(y).narrow(0, 0, 5).unsqueeze(0).expand({6, 5}));
  EXPECT_TRUE(same(xd, x, 1e-6));
  EXPECT_THROW(xd.add_(y), Error);  // devices differ
}

TEST(CudaOps, ReductionsMatchCpu) {
  SKIP_WITHOUT_CUDA();
  manual_seed(3);
  Tensor x = randn({7, 33, 65});
  const std::vector<std::vector<int64_t>> dim_sets = {{0}, {1}, {2}, {0, 2}, {1, 2}, {0, 1, 2}};
  for (const auto& dims : dim_sets) {
    for (bool keep : {false, true}) {
      cross_check("sum", {x}, [&](auto& v) { return v[0].sum(dims, keep); });
      cross_check("mean", {x}, [&](auto& v) { return v[0].mean(dims, keep); });
    }
  }
  cross_check("sum_transposed", {x}, [](auto& v) { return v[0].transpose(0, 2).sum({1}); });
  cross_check("sum_all", {x}, [](auto& v) { return v[0].sum(); });
  Tensor big = randn({3000, 1000});  // chunked: many blocks per output
  cross_check("sum_big_rows", {big}, [](auto& v) { return v[0].sum({1}); });
  cross_check("sum_big_cols", {big}, [](auto& v) { return v[0].sum({0}); });
  cross_check("sum_big_all", {big}, [](auto& v) { return v[0].sum(); });
  Tensor ints = randint(0, 9, {40, 3});
  EXPECT_TRUE(same(gpu(ints).sum({0}), ints.sum({0})));  // int64 is summed as float32
}

TEST(CudaOps, MaxArgmaxAndSoftmax) {
  SKIP_WITHOUT_CUDA();
  manual_seed(4);
  Tensor x = randn({6, 40, 9});
  for (int64_t d = 0; d < 3; ++d) {
    for (bool keep : {false, true}) {
      cross_check("max", {x}, [&](auto& v) { return v[0].max(d, keep).first; });
      EXPECT_EQ(gpu(x).argmax(d, keep).to_vector_int64(), x.argmax(d, keep).to_vector_int64());
    }
    cross_check("softmax", {x}, [&](auto& v) { return v[0].softmax(d); });
    cross_check("log_softmax", {x}, [&](auto& v) { return v[0].log_softmax(d); });
  }
  cross_check("softmax_wide", {randn({3, 5000})}, [](auto& v) { return v[0].softmax(1); });
  cross_check("max_all", {x}, [](auto& v) { return v[0].max(); });
  // Ties go to the first index; NaN wins, its first occurrence.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor t = tensor(std::vector<float>{1, 3, 3, 2, nan, 5, nan, 0, 7, 7, 7, 7}, {3, 4});
  EXPECT_EQ(gpu(t).argmax(1).to_vector_int64(), t.argmax(1).to_vector_int64());
  EXPECT_EQ(gpu(t).argmax(1).to_vector_int64(), (std::vector<int64_t>{1, 0, 0}));
  Tensor wide = zeros({2, 1000});  // ties across warp lanes
  EXPECT_EQ(gpu(wide).argmax(1).to_vector_int64(), (std::vector<int64_t>{0, 0}));
}

TEST(CudaOps, FactoriesAndRandomMatchCpu) {
  SKIP_WITHOUT_CUDA();
  EXPECT_EQ(zeros({3}, {.device = kGpu}).to_vector_float(), (std::vector<float>{0, 0, 0}));
  EXPECT_EQ(full({2}, 2.5, {.device = kGpu}).to_vector_float(), (std::vector<float>{2.5, 2.5}));
  EXPECT_EQ(full({2}, 7, {.dtype = kInt64, .device = kGpu}).to_vector_int64(),
            (std::vector<int64_t>{7, 7}));
  EXPECT_EQ(arange(4, {.dtype = kInt64, .device = kGpu}).to_vector_int64(),
            (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(arange(0, 1, 0.25, {.device = kGpu}).to_vector_float(),
            (std::vector<float>{0, 0.25, 0.5, 0.75}));
  EXPECT_EQ(tensor({1, 2}, {2}, {.device = kGpu}).device(), kGpu);
  // Random numbers come from the CPU generator: the same seed, the same values on any device.
  manual_seed(42);
  Tensor c = randn({100});
  manual_seed(42);
  Tensor g;
  {
    DeviceGuard dg(kGpu);
    g = randn({100});
    EXPECT_EQ(randperm(5).device(), kGpu);
  }
  EXPECT_EQ(g.device(), kGpu);
  EXPECT_EQ(g.to_vector_float(), c.to_vector_float());
  Tensor u = empty({50}, {.device = kGpu});
  manual_seed(7);
  uniform_(u, -1, 1);
  manual_seed(7);
  Tensor uc = empty({50});
  uniform_(uc, -1, 1);
  EXPECT_EQ(u.to_vector_float(), uc.to_vector_float());
}

TEST(CudaOps, ShapesCopiesAndMatmul) {
  SKIP_WITHOUT_CUDA();
  manual_seed(5);
  Tensor a = randn({4, 5, 6}), b = randn({4, 3, 6});
  cross_check("cat", {a, b}, [](auto& v) { return cat({v[0], v[1]}, 1); });
  cross_check("stack", {a, a}, [](auto& v) { return stack({v[0], v[1] * 2.0}, 2); });
  cross_check("permute_contiguous", {a}, [](auto& v) {
    return v[0].permute({2, 0, 1}).contiguous();
  });
  cross_check("slice_select", {a},
              [](auto& v) { return v[0].slice(2, 1, 6, 2).select(1, 3) * 1.0; });
  cross_check("reshape_clone", {a}, [](auto& v) {
    return v[0].transpose(0, 1).reshape({5, -1}).clone();
  });
  cross_check("split", {a}, [](auto& v) { return v[0].split(2, 2)[1] * 3.0; });
  Tensor m = randn({33, 17}), n = randn({17, 29});
  cross_check(
      "mm", {m, n}, [](auto& v) { return matmul(v[0], v[1]); }, 1e-4);
  cross_check(
      "mm_t", {m, n}, [](auto& v) { return mm(v[1], v[0], true, true); }, 1e-4);
  cross_check(
      "bmm", {randn({3, 8, 5}), randn({3, 5, 4})}, [](auto& v) { return matmul(v[0], v[1]); },
      1e-4);
  cross_check(
      "linear_like", {randn({16, 32}), randn({8, 32})},
      [](auto& v) { return matmul(v[0], v[1].t()).relu().mean(); }, 1e-4);
}

TEST(CudaOps, ChannelShuffleGoldensAndBandwidthPath) {
  SKIP_WITHOUT_CUDA();
  namespace F = nn::functional;
  const std::pair<const char*, int64_t> cases[] = {
      {"channel_shuffle_g4", 4}, {"channel_shuffle_3d", 3}, {"channel_shuffle_5d", 2}};
  for (auto [name, groups] : cases) {
    SCOPED_TRACE(name);
    Golden g(name);
    Tensor x = gpu(g["in.0"]).requires_grad_(true);
    Tensor out = F::channel_shuffle(x, groups);
    EXPECT_TRUE(close(host(out), g["out"], 0, "out"));  // a permutation: exact
    out.backward(gpu(g["gout"]));
    EXPECT_TRUE(close(host(x.grad()), g["grad.in.0"], 0, "grad"));
  }
  Golden g("channel_shuffle_channels_last");
  Tensor x = nn::to_channels_last(gpu(g["in.0"])).requires_grad_(true);
  ASSERT_TRUE(nn::is_channels_last(x));
  Tensor out = F::channel_shuffle(x, 3);
  EXPECT_TRUE(nn::is_channels_last(out));
  EXPECT_TRUE(close(host(out), g["out"], 0, "out"));
  out.backward(nn::to_channels_last(gpu(g["gout"])));
  EXPECT_TRUE(close(host(x.grad()), g["grad.in.0"], 0, "grad"));
  // The benchmark's shape (128-bit path), odd planes (scalar path), NHWC with C % 4 != 0.
  for (const Shape& s : {Shape{64, 232, 28, 28}, Shape{3, 12, 5, 7}}) {
    Tensor big = randn(s);
    EXPECT_EQ(F::channel_shuffle(gpu(big), 4).to_vector_float(),
              F::channel_shuffle(big, 4).to_vector_float());
    Tensor cl = F::channel_shuffle(nn::to_channels_last(gpu(big)), 4);
    EXPECT_TRUE(nn::is_channels_last(cl));
    EXPECT_EQ(cl.to_vector_float(),
              F::channel_shuffle(nn::to_channels_last(big), 4).to_vector_float());
  }
  Tensor odd = randn({2, 6, 3, 3});
  EXPECT_EQ(F::channel_shuffle(nn::to_channels_last(gpu(odd)), 3).to_vector_float(),
            F::channel_shuffle(nn::to_channels_last(odd), 3).to_vector_float());
}

namespace {
// Parameters of varied sizes: more than one fused launch's tensor list, one of several chunks.
std::vector<Tensor> make_params() {
  std::vector<Tensor> ps;
  for (int i = 0; i < 30; ++i) ps.push_back(randn({(int64_t)(1 + 37 * i)}));
  ps.push_back(randn({300, 700}));
  return ps;
}

template <typename MakeOpt>
void check_optimizer(const std::string& what, MakeOpt make) {
  SCOPED_TRACE(what);
  manual_seed(6);
  std::vector<Tensor> pc = make_params(), pg;
  for (Tensor& p : pc) {
    pg.push_back(gpu(p).requires_grad_(true));
    p.requires_grad_(true);
  }
  auto oc = make(pc), og = make(pg);
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < pc.size(); ++i) {
      Tensor g = randn(pc[i].sizes());
      pc[i].set_grad(g);
      pg[i].set_grad(gpu(g));
    }
    oc->step();
    og->step();
  }
  for (size_t i = 0; i < pc.size(); ++i) {
    EXPECT_EQ(pg[i].device(), kGpu);
    EXPECT_TRUE(same(pg[i], pc[i], 1e-6, 1e-7)) << "parameter " << i;
  }
}
}  // namespace

TEST(CudaOptim, FusedStepsMatchCpu) {
  SKIP_WITHOUT_CUDA();
  using P = std::vector<Tensor>;
  check_optimizer(
      "sgd", [](P& p) { return std::make_unique<optim::SGD>(p, optim::SGDOptions{.lr = 0.1}); });
  check_optimizer("sgd_momentum_wd", [](P& p) {
    return std::make_unique<optim::SGD>(
        p, optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 1e-2});
  });
  check_optimizer("sgd_nesterov", [](P& p) {
    return std::make_unique<optim::SGD>(
        p, optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .nesterov = true});
  });
  check_optimizer("adam",
                  [](P& p) { return std::make_unique<optim::Adam>(p, optim::AdamOptions{}); });
  check_optimizer("adam_wd_amsgrad", [](P& p) {
    return std::make_unique<optim::Adam>(
        p, optim::AdamOptions{.lr = 1e-2, .weight_decay = 0.1, .amsgrad = true});
  });
  check_optimizer("adamw", [](P& p) { return std::make_unique<optim::AdamW>(p); });
}

TEST(CudaModule, ToDeviceAndCheckpointMapLocation) {
  SKIP_WITHOUT_CUDA();
  manual_seed(8);
  nn::Sequential model({nn::Linear(4, 8), nn::ReLU(), nn::Linear(8, 2)});
  nn::StateDict before = model->state_dict();
  Tensor w0 = model->parameters()[0];
  model->to(kGpu);
  EXPECT_TRUE(w0.is_same(model->parameters()[0]));  // identity kept, storage moved
  for (const Tensor& p : model->parameters()) EXPECT_EQ(p.device(), kGpu);
  const std::string path =
      (std::filesystem::temp_directory_path() / "weft_cuda_ckpt.safetensors").string();
  save(model->state_dict(), path);  // from the device
  TensorDict on_gpu = load(path, kGpu), on_cpu = load(path);
  std::filesystem::remove(path);
  for (const auto& [k, t] : on_gpu) {
    EXPECT_EQ(t.device(), kGpu) << k;
    EXPECT_EQ(t.to_vector_float(), before.at(k).to_vector_float()) << k;
    EXPECT_EQ(on_cpu.at(k).device(), Device::CPU()) << k;
  }
  nn::Sequential other({nn::Linear(4, 8), nn::ReLU(), nn::Linear(8, 2)});
  other->to(kGpu);
  other->load_state_dict(on_cpu);  // a CPU checkpoint into a CUDA model
  Tensor x = randn({3, 4});
  EXPECT_TRUE(same(other(gpu(x)), model(gpu(x))));
}

namespace {
// An op golden of tests/golden (as tests/test_golden_ops.cpp checks on the CPU) on CUDA.
void golden_on_gpu(const std::string& name, int n_inputs,
                   const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                   double rtol = kRtol) {
  SCOPED_TRACE(name + " on cuda:0");
  Golden g(name);
  std::vector<Tensor> in;
  for (int i = 0; i < n_inputs; ++i)
    in.push_back(gpu(g["in." + std::to_string(i)]).requires_grad_(true));
  Tensor out = fn(in);
  ASSERT_EQ(out.device(), kGpu);
  ASSERT_TRUE(close(host(out), g["out"], rtol, name + " out"));
  out.backward(gpu(g["gout"]));
  for (int i = 0; i < n_inputs; ++i) {
    const std::string key = "grad.in." + std::to_string(i);
    if (g.has(key)) {
      EXPECT_TRUE(close(host(in[i].grad()), g[key], rtol, name + " " + key));
    }
  }
}
}  // namespace

TEST(CudaGoldenOps, SameFilesAsCpu) {
  SKIP_WITHOUT_CUDA();
  golden_on_gpu("add_bcast", 2, [](auto& x) { return x[0] + x[1]; });
  golden_on_gpu("sub_bcast", 2, [](auto& x) { return x[0] - x[1]; });
  golden_on_gpu("mul_bcast", 2, [](auto& x) { return x[0] * x[1]; });
  golden_on_gpu("div_bcast", 2, [](auto& x) { return x[0] / x[1]; });
  golden_on_gpu("neg", 1, [](auto& x) { return -x[0]; });
  golden_on_gpu("exp", 1, [](auto& x) { return x[0].exp(); });
  golden_on_gpu("log", 1, [](auto& x) { return x[0].log(); });
  golden_on_gpu("sqrt", 1, [](auto& x) { return x[0].sqrt(); });
  golden_on_gpu("abs", 1, [](auto& x) { return x[0].abs(); });
  golden_on_gpu("pow_scalar", 1, [](auto& x) { return x[0].pow(2.5); });
  golden_on_gpu("relu", 1, [](auto& x) { return x[0].relu(); });
  golden_on_gpu("sigmoid", 1, [](auto& x) { return x[0].sigmoid(); });
  golden_on_gpu("tanh", 1, [](auto& x) { return x[0].tanh(); });
  golden_on_gpu("clamp", 1, [](auto& x) { return x[0].clamp(-0.5, 0.5); });
  golden_on_gpu("sum_dim", 1, [](auto& x) { return x[0].sum({1}); });
  golden_on_gpu("sum_all", 1, [](auto& x) { return x[0].sum(); });
  golden_on_gpu("mean_dim", 1, [](auto& x) { return x[0].mean({0, 2}, true); });
  golden_on_gpu("softmax_dim1", 1, [](auto& x) { return x[0].softmax(1); });
  golden_on_gpu("log_softmax_dim1", 1, [](auto& x) { return x[0].log_softmax(1); });
  golden_on_gpu("matmul_2d", 2, [](auto& x) { return matmul(x[0], x[1]); });
  golden_on_gpu("matmul_batched", 2, [](auto& x) { return matmul(x[0], x[1]); });
  golden_on_gpu("transpose_contig", 1, [](auto& x) { return x[0].transpose(0, 2).contiguous(); });
  golden_on_gpu("cat_dim1", 2, [](auto& x) { return cat({x[0], x[1]}, 1); });
  golden_on_gpu("stack_dim0", 2, [](auto& x) { return stack({x[0], x[1]}, 0); });
  Golden g("max_dim");
  Tensor x = gpu(g["in.0"]).requires_grad_(true);
  auto [vals, idx] = x.max(1);
  EXPECT_TRUE(close(host(vals), g["out.0"], kRtol, "values"));
  EXPECT_EQ(idx.to_vector_int64(), g["out.1"].to_vector_int64());
  vals.backward(gpu(g["gout"]));
  EXPECT_TRUE(close(host(x.grad()), g["grad.in.0"], kRtol, "grad"));
}
