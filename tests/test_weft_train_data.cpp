// weft-train on data that cannot train or test, in real processes on IDX files written here: an
// empty training set, fewer images than one batch per rank (incomplete batches are dropped), an
// empty test set, and a gzip whose IDX header declares more than the decompression cap are each
// an error naming the problem, before any checkpoint or metrics file is written.
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <string>
#include <vector>

#include "idx_bytes.h"
#include "weft_train_cli.h"

using weft::test::build_dir;
using weft::test::fresh_dir;
using weft::test::idx_bytes;
using weft::test::run_command;
using weft::test::weft_train;
namespace fs = std::filesystem;

namespace {

std::string as_string(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }

std::vector<uint8_t> gzip(const std::vector<uint8_t>& in) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
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

// An MNIST-format directory with `train` and `test` images (pixels and labels cycling).
fs::path make_data(const std::string& name, uint32_t train, uint32_t test) {
  const fs::path d = fresh_dir(name);
  fs::create_directories(d);
  for (auto [prefix, n] : {std::pair{"train", train}, std::pair{"t10k", test}}) {
    std::vector<uint8_t> pixels(size_t{n} * 28 * 28), labels(n);
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 7);
    for (uint32_t i = 0; i < n; ++i) labels[i] = static_cast<uint8_t>(i % 10);
    weft::test::write_file(d / (std::string(prefix) + "-images-idx3-ubyte"),
                           as_string(idx_bytes(0x08, {n, 28, 28}, pixels)));
    weft::test::write_file(d / (std::string(prefix) + "-labels-idx1-ubyte"),
                           as_string(idx_bytes(0x08, {n}, labels)));
  }
  return d;
}

// weft-train on `data`, checked to fail with `needle` in its output and to have written nothing.
void expect_refused(const std::string& launcher, const fs::path& data, const std::string& extra,
                    const std::string& needle) {
  const fs::path ckpt = data / "ckpt";
  auto r = run_command(launcher + weft_train() + " --data " + data.string() + " --epochs 1 " +
                           "--no-progress --checkpoint-dir " + ckpt.string() + " " + extra,
                       300);
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_NE(r.output.find(needle), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(ckpt)) << "nothing may be written:\n" << r.output;
}

}  // namespace

TEST(WeftTrainData, EmptyOrTooSmallSetsAreErrors) {
  const fs::path empty_train = make_data("empty_train", 0, 10);
  expect_refused("", empty_train, "",
                 "the training set in '" + empty_train.string() + "' is empty");
  const fs::path empty_test = make_data("empty_test", 64, 0);
  expect_refused("", empty_test, "", "the test set in '" + empty_test.string() + "' is empty");
  // 20 images, batches of 32: not one full batch.
  const fs::path small = make_data("small", 20, 10);
  expect_refused(
      "", small, "--batch-size 32",
      "the 20 training images give each of 1 process(es) 20, fewer than one batch of 32");
  // 40 images over 2 ranks: 20 each, still under a batch; every rank refuses alike.
  const fs::path two = make_data("small2", 40, 10);
  expect_refused(
      build_dir() + "/tools/weft-run --standalone --nproc-per-node 2 ", two, "--batch-size 32",
      "the 40 training images give each of 2 process(es) 20, fewer than one batch of 32");
  // Enough for one batch per rank trains.
  auto r = run_command(weft_train() + " --data " + small.string() +
                           " --epochs 1 --no-progress --batch-size 16 --checkpoint-dir " +
                           (small / "ok").string(),
                       300);
  EXPECT_EQ(r.code, 0) << r.output;
  for (const auto& d : {empty_train, empty_test, small, two}) fs::remove_all(d);
}

// A 2.4 GB training-images file in a few hundred bytes of gzip: refused from its header, before
// any data is inflated (the default cap is 2 GiB).
TEST(WeftTrainData, GzipBombIsRefusedFromItsHeader) {
  const fs::path d = make_data("bomb", 10, 10);
  fs::remove(d / "train-images-idx3-ubyte");
  const auto bomb = gzip(idx_bytes(0x08, {3'000'000, 28, 28}, std::vector<uint8_t>(1 << 16, 0)));
  ASSERT_LT(bomb.size(), 4096u);
  weft::test::write_file(d / "train-images-idx3-ubyte.gz", as_string(bomb));
  expect_refused("", d, "",
                 "train-images-idx3-ubyte.gz': gzip: decompressed data exceeds the limit of "
                 "2147483648 bytes: the IDX header declares 2352000000 bytes of data");
  fs::remove_all(d);
}
