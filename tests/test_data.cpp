// weft::data tests: TensorDataset, Sequential/RandomSampler determinism, DataLoader coverage,
// drop_last, shuffling, worker prefetch equivalence, error propagation, early exit, custom
// collate, and the MNIST reader on IDX files written here (plus the real Fashion-MNIST test set
// when Debian's dataset-fashion-mnist is installed).
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "error_message.h"
#include "idx_bytes.h"
#include "weft/data.h"
#include "weft/error.h"
#include "weft/ops.h"

using weft::test::idx_bytes;

namespace fs = std::filesystem;
using namespace weft;
using namespace weft::data;

namespace {

// Runs `fn` and checks that it throws weft::Error whose message contains every needle.
template <typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& needles) {
  const std::string m = weft::test::error_message([&] { fn(); });
  for (const auto& needle : needles)
    EXPECT_NE(m.find(needle), std::string::npos)
        << "message: " << m << "\nexpected to contain: " << needle;
}

// data[i] = [i, 10*i] (float), target[i] = i (int64).
TensorDataset make_dataset(int64_t n) {
  std::vector<float> d;
  std::vector<int64_t> t;
  for (int64_t i = 0; i < n; ++i) {
    d.push_back(float(i));
    d.push_back(float(10 * i));
    t.push_back(i);
  }
  return TensorDataset(tensor(d, {n, 2}), tensor(t, {n}));
}

std::vector<std::vector<int64_t>> epoch_targets(DataLoader& loader) {
  std::vector<std::vector<int64_t>> out;
  for (auto& batch : loader) out.push_back(batch.target.to_vector_int64());
  return out;
}

}  // namespace

// --- TensorDataset ---

TEST(TensorDataset, ShapesAndViews) {
  TensorDataset ds(arange(0, 24, 1).reshape({4, 2, 3}), arange(4));
  ASSERT_EQ(ds.size(), 4u);
  Example ex = ds.get(2);
  EXPECT_EQ(ex.data.sizes(), (Shape{2, 3}));
  EXPECT_EQ(ex.data.to_vector_float()[0], 12.f);
  EXPECT_EQ(ex.target.dim(), 0);
  EXPECT_EQ(ex.target.item<int64_t>(), 2);

  TensorDataset unlabelled(zeros({3, 5}));
  EXPECT_EQ(unlabelled.size(), 3u);
  EXPECT_FALSE(unlabelled.get(0).target.defined());
}

TEST(TensorDataset, Errors) {
  expect_error([] { TensorDataset(zeros({4, 2}), zeros({3})); }, {"4 samples", "target has 3"});
  expect_error([] { TensorDataset(scalar_tensor(1.0)); }, {"at least one dimension"});
  expect_error([] { TensorDataset(zeros({2}), scalar_tensor(1.0)); },
               {"target must have at least one dimension"});
  expect_error([] { TensorDataset ds{Tensor()}; }, {"undefined"});
  TensorDataset ds(zeros({3, 2}));
  expect_error([&] { ds.get(3); }, {"index 3 out of range for 3"});
}

// --- samplers ---

TEST(Sampler, Sequential) {
  SequentialSampler s(5);
  EXPECT_EQ(s.size(), 5u);
  EXPECT_EQ(s.indices(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  s.set_epoch(7);
  EXPECT_EQ(s.epoch(), 7);
  EXPECT_EQ(s.indices(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_TRUE(SequentialSampler(0).indices().empty());
}

TEST(Sampler, RandomIsDeterministicPermutationPerSeedAndEpoch) {
  const size_t n = 100;
  RandomSampler a(n, 42), b(n, 42), c(n, 43);
  auto a0 = a.indices();
  ASSERT_EQ(a0.size(), n);
  std::vector<int64_t> sorted = a0;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> iota(n);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(sorted, iota);     // a permutation
  EXPECT_NE(a0, iota);         // and actually shuffled
  EXPECT_EQ(a.indices(), a0);  // repeatable: no hidden state advances
  EXPECT_EQ(b.indices(), a0);  // same (seed, epoch) -> same order
  EXPECT_NE(c.indices(), a0);  // another seed differs

  a.set_epoch(1);
  auto a1 = a.indices();
  EXPECT_NE(a1, a0);  // epochs differ
  b.set_epoch(1);
  EXPECT_EQ(b.indices(), a1);
  // A "resumed" sampler jumping straight to epoch 1 matches; the global generator is unused.
  manual_seed(123);
  RandomSampler resumed(n, 42);
  resumed.set_epoch(1);
  (void)randn({10});
  EXPECT_EQ(resumed.indices(), a1);
  EXPECT_NE(mix_seed(1, 0), mix_seed(0, 1));
}

// --- DataLoader ---

TEST(DataLoader, CoversDatasetOnceWithPartialLastBatch) {
  auto ds = make_dataset(10);
  DataLoader loader(ds, {.batch_size = 4});
  EXPECT_EQ(loader.len(), 3u);
  std::vector<int64_t> sizes, seen;
  for (auto& [x, y] : loader) {
    sizes.push_back(x.size(0));
    EXPECT_EQ(x.dim(), 2);
    EXPECT_EQ(x.size(1), 2);
    EXPECT_EQ(y.size(0), x.size(0));
    auto xs = x.to_vector_float();
    auto ys = y.to_vector_int64();
    for (size_t i = 0; i < ys.size(); ++i) {
      EXPECT_EQ(xs[2 * i], float(ys[i]));
      EXPECT_EQ(xs[2 * i + 1], float(10 * ys[i]));
      seen.push_back(ys[i]);
    }
  }
  EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4, 2}));
  EXPECT_EQ(seen, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  // A second epoch runs again, identically without shuffle.
  EXPECT_EQ(epoch_targets(loader).size(), 3u);
}

TEST(DataLoader, DropLast) {
  auto ds = make_dataset(10);
  DataLoader loader(ds, {.batch_size = 4, .drop_last = true});
  EXPECT_EQ(loader.len(), 2u);
  auto t = epoch_targets(loader);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[1], (std::vector<int64_t>{4, 5, 6, 7}));

  DataLoader exact(ds, {.batch_size = 5, .drop_last = true});
  EXPECT_EQ(exact.len(), 2u);
  DataLoader none(ds, {.batch_size = 11, .drop_last = true});
  EXPECT_EQ(none.len(), 0u);
  EXPECT_TRUE(none.begin() == none.end());
  auto empty = make_dataset(0);
  DataLoader empty_loader(empty, {.batch_size = 3, .num_workers = 2});
  EXPECT_EQ(empty_loader.len(), 0u);
  EXPECT_TRUE(epoch_targets(empty_loader).empty());
}

TEST(DataLoader, ShuffleIsDeterministicAndChangesPerEpoch) {
  auto ds = make_dataset(50);
  DataLoader a(ds, {.batch_size = 8, .shuffle = true, .seed = 7});
  DataLoader b(ds, {.batch_size = 8, .shuffle = true, .seed = 7});
  DataLoader c(ds, {.batch_size = 8, .shuffle = true, .seed = 8});
  auto a0 = epoch_targets(a), a1 = epoch_targets(a);
  EXPECT_EQ(epoch_targets(b), a0);
  EXPECT_EQ(epoch_targets(b), a1);
  EXPECT_NE(a0, a1);  // a new order each epoch
  EXPECT_NE(epoch_targets(c), a0);
  std::vector<int64_t> all;
  for (auto& v : a0) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(all[size_t(i)], i);  // each sample once

  // Resume: a fresh loader set to epoch 1 replays epoch 1.
  DataLoader resumed(ds, {.batch_size = 8, .shuffle = true, .seed = 7});
  resumed.set_epoch(1);
  EXPECT_EQ(epoch_targets(resumed), a1);
}

TEST(DataLoader, UserSamplerOverridesShuffleAndGetsSetEpoch) {
  auto ds = make_dataset(20);
  RandomSampler sampler(20, 3);
  DataLoader loader(ds, {.batch_size = 5, .shuffle = false, .sampler = &sampler});
  auto e0 = epoch_targets(loader);
  EXPECT_EQ(epoch_targets(loader), e0);  // the user's sampler keeps its epoch
  loader.set_epoch(4);
  EXPECT_EQ(sampler.epoch(), 4);
  auto e4 = epoch_targets(loader);
  EXPECT_NE(e4, e0);
  std::vector<int64_t> flat;
  for (auto& v : e4) flat.insert(flat.end(), v.begin(), v.end());
  EXPECT_EQ(flat, sampler.indices());
}

TEST(DataLoader, WorkersGiveIdenticalBatches) {
  auto ds = make_dataset(103);
  for (bool drop_last : {false, true}) {
    DataLoader serial(ds, {.batch_size = 4, .shuffle = true, .seed = 11, .drop_last = drop_last});
    DataLoader parallel(
        ds,
        {.batch_size = 4, .shuffle = true, .seed = 11, .drop_last = drop_last, .num_workers = 3});
    EXPECT_EQ(parallel.len(), serial.len());
    for (int epoch = 0; epoch < 3; ++epoch) {
      std::vector<Batch> s, p;
      for (auto& b : serial) s.push_back(b);
      for (auto& b : parallel) p.push_back(b);
      ASSERT_EQ(s.size(), p.size());
      ASSERT_EQ(s.size(), serial.len());
      for (size_t i = 0; i < s.size(); ++i) {
        EXPECT_EQ(s[i].data.to_vector_float(), p[i].data.to_vector_float()) << "batch " << i;
        EXPECT_EQ(s[i].target.to_vector_int64(), p[i].target.to_vector_int64()) << "batch " << i;
      }
    }
  }
}

namespace {
// get() throws for one index; optionally sleeps to make workers race.
class FlakyDataset : public Dataset {
 public:
  FlakyDataset(size_t n, size_t bad, int sleep_us = 0) : n_(n), bad_(bad), sleep_us_(sleep_us) {}
  size_t size() const override { return n_; }
  Example get(size_t i) const override {
    calls_.fetch_add(1);
    if (sleep_us_) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us_));
    if (i == bad_) throw std::runtime_error("corrupt sample " + std::to_string(i));
    return {full({2}, double(i)), scalar_tensor(double(i), {.dtype = kInt64})};
  }
  int calls() const { return calls_.load(); }

 private:
  size_t n_, bad_;
  int sleep_us_;
  mutable std::atomic<int> calls_{0};
};
}  // namespace

TEST(DataLoader, DatasetExceptionPropagatesWithMessage) {
  for (int workers : {0, 1, 3}) {
    FlakyDataset ds(40, 13, workers ? 200 : 0);
    DataLoader loader(ds, {.batch_size = 4, .num_workers = workers});
    int delivered = 0;
    try {
      for (auto& b : loader) {
        (void)b;
        ++delivered;
      }
      ADD_FAILURE() << "no exception with num_workers=" << workers;
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "corrupt sample 13") << "num_workers=" << workers;
    }
    // Batches before the failing one (index 13 is in batch 3) arrive first, in order.
    EXPECT_EQ(delivered, 3) << "num_workers=" << workers;
    // The loader is usable again after the failure.
    auto it = loader.begin();
    EXPECT_EQ((*it).target.to_vector_int64(), (std::vector<int64_t>{0, 1, 2, 3}));
  }
  // An error in the very first batch comes out of begin().
  FlakyDataset first(8, 0);
  DataLoader loader(first, {.batch_size = 4, .num_workers = 2});
  EXPECT_THROW(loader.begin(), std::runtime_error);
}

TEST(DataLoader, BreakingOutEarlyStopsWorkers) {
  FlakyDataset ds(10000, size_t(-1), 100);
  {
    DataLoader loader(ds, {.batch_size = 2, .num_workers = 3});
    int n = 0;
    for (auto& b : loader) {
      (void)b;
      if (++n == 3) break;
    }
    // Workers stopped at the break: only the bounded prefetch window was ever built.
    const int calls = ds.calls();
    EXPECT_LE(calls, 2 * (3 + 2 * 3 + 3));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(ds.calls(), calls);
    // Destroying the loader with an epoch in progress joins its workers too.
    auto it = loader.begin();
    ++it;
  }
  // A stale iterator of a destroyed loader fails clearly instead of hanging.
  DataLoader::Iterator stale;
  {
    DataLoader loader(ds, {.batch_size = 2, .num_workers = 2});
    stale = loader.begin();
  }
  EXPECT_THROW(++stale, weft::Error);
}

TEST(DataLoader, CustomCollate) {
  auto ds = make_dataset(6);
  DataLoader loader(
      ds, {.batch_size = 3, .num_workers = 2, .collate = [](const std::vector<Example>& ex) {
             // Concatenate instead of stack, and count the samples as target.
             std::vector<Tensor> d;
             for (auto& e : ex) d.push_back(e.data);
             return Batch{cat(d, 0), full({1}, double(ex.size()))};
           }});
  int n = 0;
  for (auto& b : loader) {
    EXPECT_EQ(b.data.sizes(), (Shape{6}));
    EXPECT_EQ(b.target.to_vector_float(), (std::vector<float>{3.f}));
    ++n;
  }
  EXPECT_EQ(n, 2);
}

TEST(DataLoader, DefaultCollateAndOptionErrors) {
  TensorDataset unlabelled(zeros({5, 3}));
  DataLoader loader(unlabelled, {.batch_size = 2});
  for (auto& b : loader) EXPECT_FALSE(b.target.defined());
  expect_error([] { default_collate({}); }, {"empty batch"});
  expect_error(
      [] {
        default_collate({{zeros({2}), zeros({1})}, {zeros({2}), Tensor()}});
      },
      {"sample 1 has no target"});
  expect_error(
      [] {
        default_collate({{zeros({2}), Tensor()}, {zeros({3}), Tensor()}});
      },
      {"stack"});
  auto ds = make_dataset(4);
  expect_error([&] { DataLoader(ds, {.batch_size = 0}); }, {"batch_size must be >= 1"});
  expect_error([&] { DataLoader(ds, {.num_workers = -1}); }, {"num_workers must be >= 0"});
  SequentialSampler too_long(5);
  DataLoader bad(ds, {.batch_size = 2, .sampler = &too_long});
  expect_error([&] { epoch_targets(bad); }, {"sampler produced index 4", "has 4 samples"});
}

// --- MNIST ---

namespace {

std::vector<uint8_t> gzip(const std::vector<uint8_t>& in) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::vector<uint8_t> out(deflateBound(&zs, in.size()) + 64);
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

void write_file(const fs::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// A fresh directory removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("weft_mnist_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// n images whose pixel p of image i is (i * 7 + p) % 256, labels i % 10.
std::vector<uint8_t> image_pixels(uint32_t n) {
  std::vector<uint8_t> px(size_t(n) * 784);
  for (size_t i = 0; i < n; ++i)
    for (size_t p = 0; p < 784; ++p) px[i * 784 + p] = uint8_t((i * 7 + p) % 256);
  return px;
}
std::vector<uint8_t> label_values(uint32_t n) {
  std::vector<uint8_t> l(n);
  for (uint32_t i = 0; i < n; ++i) l[i] = uint8_t(i % 10);
  return l;
}

void write_mnist(const fs::path& dir, const std::string& prefix, uint32_t n, bool gz) {
  auto img = idx_bytes(0x08, {n, 28, 28}, image_pixels(n));
  auto lab = idx_bytes(0x08, {n}, label_values(n));
  write_file(dir / (prefix + "-images-idx3-ubyte" + (gz ? ".gz" : "")), gz ? gzip(img) : img);
  write_file(dir / (prefix + "-labels-idx1-ubyte" + (gz ? ".gz" : "")), gz ? gzip(lab) : lab);
}

}  // namespace

TEST(MNIST, ReadsPlainAndGzip) {
  for (bool gz : {false, true}) {
    TempDir dir;
    write_mnist(dir.path, "train", 12, gz);
    write_mnist(dir.path, "t10k", 5, !gz);
    MNIST train(dir.path.string(), true);
    ASSERT_EQ(train.size(), 12u);
    EXPECT_EQ(train.images().sizes(), (Shape{12, 1, 28, 28}));
    EXPECT_EQ(train.images().dtype(), kFloat32);
    EXPECT_EQ(train.labels().sizes(), (Shape{12}));
    EXPECT_EQ(train.labels().dtype(), kInt64);
    auto px = image_pixels(12);
    auto imgs = train.images().to_vector_float();
    for (size_t i = 0; i < px.size(); ++i) ASSERT_FLOAT_EQ(imgs[i], px[i] / 255.f) << i;
    auto labels = train.labels().to_vector_int64();
    for (size_t i = 0; i < 12; ++i) EXPECT_EQ(labels[i], int64_t(i % 10));
    Example ex = train.get(11);
    EXPECT_EQ(ex.data.sizes(), (Shape{1, 28, 28}));
    EXPECT_EQ(ex.target.item<int64_t>(), 1);
    expect_error([&] { train.get(12); }, {"index 12 out of range"});

    MNIST test(dir.path.string(), false);
    EXPECT_EQ(test.size(), 5u);
  }
}

TEST(MNIST, NormalizeLimitAndLoader) {
  TempDir dir;
  write_mnist(dir.path, "train", 20, true);
  MNIST ds(dir.path.string(), true, {.normalize = true, .mean = 0.5, .std = 0.25, .limit = 7});
  ASSERT_EQ(ds.size(), 7u);
  EXPECT_EQ(ds.images().size(0), 7);
  auto px = image_pixels(7);
  auto imgs = ds.images().to_vector_float();
  for (size_t i = 0; i < px.size(); ++i)
    ASSERT_NEAR(imgs[i], (px[i] / 255.0 - 0.5) / 0.25, 1e-5) << i;
  EXPECT_EQ(MNIST(dir.path.string(), true, {.limit = 100}).size(), 20u);
  EXPECT_EQ(MNIST(dir.path.string(), true, {.limit = 0}).size(), 0u);

  DataLoader loader(ds, {.batch_size = 3, .num_workers = 2});
  std::vector<Shape> shapes;
  for (auto& [x, y] : loader) {
    shapes.push_back(x.sizes());
    EXPECT_EQ(y.dtype(), kInt64);
  }
  EXPECT_EQ(shapes, (std::vector<Shape>{{3, 1, 28, 28}, {3, 1, 28, 28}, {1, 1, 28, 28}}));
}

TEST(MNIST, Errors) {
  {
    TempDir dir;
    expect_error([&] { MNIST(dir.path.string(), true); },
                 {dir.path.string(), "train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"});
    expect_error([&] { MNIST((dir.path / "nope").string(), false); },
                 {"does not exist", "t10k-images-idx3-ubyte"});
    write_file(dir.path / "t10k-images-idx3-ubyte", idx_bytes(0x08, {1, 28, 28}, image_pixels(1)));
    expect_error([&] { MNIST(dir.path.string(), false); },
                 {"no labels file", "t10k-labels-idx1-ubyte.gz"});
  }
  struct Case {
    std::vector<uint8_t> images, labels;
    std::vector<std::string> needles;
  };
  const std::vector<Case> cases = {
      {idx_bytes(0x08, {3, 28, 28}, image_pixels(3)),
       idx_bytes(0x08, {4}, label_values(4)),
       {"holds 3 images", "holds 4 labels"}},
      {idx_bytes(0x08, {2, 28, 27}, std::vector<uint8_t>(2 * 28 * 27)),
       idx_bytes(0x08, {2}, label_values(2)),
       {"train-images-idx3-ubyte", "expected (N, 28, 28)"}},
      {idx_bytes(0x08, {784 * 2}, image_pixels(2)),
       idx_bytes(0x08, {2}, label_values(2)),
       {"expected (N, 28, 28)"}},
      {idx_bytes(0x09, {2, 28, 28}, image_pixels(2)),
       idx_bytes(0x08, {2}, label_values(2)),
       {"type code 0x9", "expected 0x08"}},
      {idx_bytes(0x08, {2, 28, 28}, image_pixels(2)),
       idx_bytes(0x0C, {2}, std::vector<uint8_t>(8)),
       {"train-labels-idx1-ubyte", "type code 0xc"}},
      {idx_bytes(0x08, {2, 28, 28}, image_pixels(2)),
       idx_bytes(0x08, {2, 1}, label_values(2)),
       {"train-labels-idx1-ubyte", "expected (N)"}},
      {idx_bytes(0x08, {3, 28, 28}, image_pixels(3)),
       idx_bytes(0x08, {3}, {1, 10, 2}),
       {"label 10 of sample 1", "outside 0..9"}},
      // A truncated file: the IDX reader's own error, naming the file.
      {idx_bytes(0x08, {2, 28, 28}, image_pixels(1)),
       idx_bytes(0x08, {2}, label_values(2)),
       {"train-images-idx3-ubyte"}},
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    SCOPED_TRACE("case " + std::to_string(c));
    TempDir dir;
    write_file(dir.path / "train-images-idx3-ubyte.gz", gzip(cases[c].images));
    write_file(dir.path / "train-labels-idx1-ubyte", cases[c].labels);
    expect_error([&] { MNIST(dir.path.string(), true); }, cases[c].needles);
  }
  TempDir dir;
  write_mnist(dir.path, "train", 2, false);
  expect_error([&] { MNIST(dir.path.string(), true, {.limit = -1}); }, {"limit must be >= 0"});
  expect_error([&] { MNIST(dir.path.string(), true, {.normalize = true, .std = 0}); }, {"std > 0"});
}

TEST(MNIST, RealFashionMnistTestSet) {
  const fs::path root = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(root / "t10k-images-idx3-ubyte.gz") &&
      !fs::exists(root / "t10k-images-idx3-ubyte"))
    GTEST_SKIP() << root << " not found (Debian package dataset-fashion-mnist)";
  MNIST test(root.string(), false);
  ASSERT_EQ(test.size(), 10000u);
  EXPECT_EQ(test.images().sizes(), (Shape{10000, 1, 28, 28}));
  std::vector<int> counts(10, 0);
  for (int64_t l : test.labels().to_vector_int64()) {
    ASSERT_GE(l, 0);
    ASSERT_LE(l, 9);
    ++counts[size_t(l)];
  }
  for (int c = 0; c < 10; ++c) EXPECT_EQ(counts[size_t(c)], 1000) << "class " << c;
  auto px = test.images().to_vector_float();
  auto [lo, hi] = std::minmax_element(px.begin(), px.end());
  EXPECT_EQ(*lo, 0.f);
  EXPECT_EQ(*hi, 1.f);
}

namespace {
// `n` CIFAR-10 records: label (first + r) % 10, pixel p of channel c = (r * 13 + c * 5 + p) % 256.
std::vector<uint8_t> cifar_records(int n, int first) {
  std::vector<uint8_t> out;
  for (int r = 0; r < n; ++r) {
    out.push_back(uint8_t((first + r) % 10));
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 1024; ++p) out.push_back(uint8_t((r * 13 + c * 5 + p) % 256));
  }
  return out;
}
}  // namespace

TEST(CIFAR10, ReadsBatchesInOrderFromTheTarballDirectory) {
  TempDir dir;
  const fs::path bin = dir.path / "cifar-10-batches-bin";
  fs::create_directories(bin);
  for (int b = 1; b <= 5; ++b)
    write_file(bin / ("data_batch_" + std::to_string(b) + ".bin"), cifar_records(2, b * 100));
  write_file(bin / "test_batch.bin", cifar_records(3, 7));
  CIFAR10 train(dir.path.string());
  ASSERT_EQ(train.size(), 10u);
  EXPECT_EQ(train.images().sizes(), (Shape{10, 3, 32, 32}));
  // Batch b's record r is sample 2*(b-1)+r, label (100*b + r) % 10.
  std::vector<int64_t> want;
  for (int b = 1; b <= 5; ++b)
    for (int r = 0; r < 2; ++r) want.push_back((b * 100 + r) % 10);
  EXPECT_EQ(train.labels().to_vector_int64(), want);
  Example e = train.get(3);  // batch 2, record 1
  EXPECT_EQ(e.target.item<int64_t>(), 1);
  EXPECT_EQ(e.data.sizes(), (Shape{3, 32, 32}));
  EXPECT_FLOAT_EQ(e.data[2][1][3].item<float>(), float(((13 + 10 + 35) % 256) / 255.0));
  CIFAR10 test(bin.string(), false, {.normalize = true, .limit = 2});
  ASSERT_EQ(test.size(), 2u);
  // Record 1, channel 1 (green), pixel 0: (13 + 5) / 255, normalised with green's statistics.
  EXPECT_NEAR(test.get(1).data[1][0][0].item<float>(), (18 / 255.0 - 0.4822) / 0.2435, 1e-6);
  EXPECT_EQ(test.labels().to_vector_int64(), (std::vector<int64_t>{7, 8}));
}

TEST(CIFAR10, BadFilesAreClearErrors) {
  const auto message = test::error_message;
  TempDir dir;
  EXPECT_NE(message([&] { CIFAR10((dir.path / "absent").string()); }).find("does not exist"),
            std::string::npos);
  EXPECT_NE(message([&] { CIFAR10(dir.path.string()); }).find("data_batch_1.bin"),
            std::string::npos);
  std::vector<uint8_t> cut = cifar_records(2, 0);
  cut.resize(cut.size() - 100);
  write_file(dir.path / "test_batch.bin", cut);
  EXPECT_NE(message([&] { CIFAR10(dir.path.string(), false); }).find("not a whole number"),
            std::string::npos);
  std::vector<uint8_t> bad = cifar_records(3, 0);
  bad[2 * 3073] = 12;
  write_file(dir.path / "test_batch.bin", bad);
  const std::string m = message([&] { CIFAR10(dir.path.string(), false); });
  EXPECT_NE(m.find("label 12 of record 2"), std::string::npos) << m;
  write_file(dir.path / "data_batch_1.bin", cifar_records(1, 0));
  EXPECT_NE(message([&] { CIFAR10(dir.path.string(), true); }).find("data_batch_2.bin"),
            std::string::npos);
}
