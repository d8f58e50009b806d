// weft-train --strategy fsdp (FullyShardedDataParallel, sharded checkpoints) on a Fashion-MNIST
// subset with Adam: 2 ranks train as --strategy ddp does (losses and accuracies within float
// tolerance: the gradients are averaged by reduce-scatters instead of all-reduces); each epoch's
// checkpoint is a distributed checkpoint in which the model's parameters and the optimizer state
// are split between the ranks' files; resuming from epoch 1 at 2 ranks reproduces the
// uninterrupted run exactly, and at 1 process the plain DDP checkpoint resumed at 1 process.
// With --batchnorm sync (SyncBatchNorm inside FSDP units) fsdp trains as ddp does with it.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "weft/serialize.h"
#include "weft_train_cli.h"

using weft::test::csv_cells;
using weft::test::csv_rows;
using weft::test::fresh_dir;
using weft::test::metrics_only;
using weft::test::run_command;
namespace fs = std::filesystem;

namespace {

bool have_data() { return fs::exists(weft::test::kFashionMnist); }

std::string ranks(int n, const fs::path& dir, const std::string& extra) {
  return weft::test::adam_subset_ranks(n, dir, extra);
}
std::string one(const fs::path& dir, const std::string& extra) {
  return weft::test::adam_subset_one(dir, extra);
}

std::vector<std::string> rows(const fs::path& dir) {
  return csv_rows((dir / "metrics.csv").string());
}

bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

// Rows of two runs agree: the epoch exactly, train and test loss within 1e-4 (relative), test
// accuracy within one image of the 200.
void expect_close(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t r = 0; r < a.size(); ++r) {
    const auto x = csv_cells(a[r]), y = csv_cells(b[r]);
    ASSERT_GE(x.size(), 4u);
    ASSERT_GE(y.size(), 4u);
    EXPECT_EQ(x[0], y[0]);
    for (int c : {1, 2}) {
      const double u = std::stod(x[c]), v = std::stod(y[c]);
      EXPECT_NEAR(u, v, 1e-4 * std::max(1.0, std::abs(v))) << "row " << r << " column " << c;
    }
    EXPECT_NEAR(std::stod(x[3]), std::stod(y[3]), 0.5 / 200) << "row " << r << " accuracy";
  }
}

// Two-rank runs into `ddp` and `fsdp` with the same `flags`, the second under --strategy fsdp:
// their rows agree (expect_close). Returns fsdp's rows.
std::vector<std::string> expect_fsdp_as_ddp(const fs::path& ddp, const fs::path& fsdp,
                                            const std::string& flags) {
  auto r = run_command(ranks(2, ddp, flags), 300);
  EXPECT_EQ(r.code, 0) << r.output;
  r = run_command(ranks(2, fsdp, "--strategy fsdp " + flags), 300);
  EXPECT_EQ(r.code, 0) << r.output;
  const auto ref = rows(ddp), got = rows(fsdp);
  EXPECT_EQ(ref.size(), 2u);
  expect_close(got, ref);
  return got;
}

// A copy of `from` holding only its epoch-1 checkpoint: what a run stopped in epoch 2 leaves.
fs::path stopped_after_epoch_1(const fs::path& from, const std::string& name) {
  const fs::path to = fresh_dir(name);
  fs::copy(from, to, fs::copy_options::recursive);
  fs::remove_all(to / "epoch-0002.dcp");
  fs::remove(to / "epoch-0002.safetensors");
  return to;
}

// Elements of entry `key` (every box of it) in one rank's file of a sharded checkpoint.
int64_t stored(const fs::path& file, const std::string& key) {
  int64_t n = 0;
  for (const auto& [k, t] : weft::load(file.string()))
    if (k.substr(0, k.find('@')) == key) n += t.numel();
  return n;
}

}  // namespace

TEST(WeftTrainFsdp, TrainsAsDdpAndResumesAtAnyWorldSize) {
  if (!have_data()) GTEST_SKIP() << "Debian package dataset-fashion-mnist is missing";
  const fs::path ddp = fresh_dir("fsdp_ddp"), fsdp = fresh_dir("fsdp_fsdp");
  const auto got = expect_fsdp_as_ddp(ddp, fsdp, "");
  ASSERT_EQ(got.size(), 2u);

  // Sharded: the two newest checkpoints are directories with one file per rank; the first
  // Linear's weight (128 x 3136) and its Adam state are split between the ranks' files.
  const fs::path ck = fsdp / "epoch-0002.dcp";
  ASSERT_TRUE(fs::exists(ck / "index"));
  EXPECT_TRUE(fs::exists(fsdp / "epoch-0001.dcp"));
  EXPECT_FALSE(fs::exists(fsdp / "epoch-0002.safetensors"));
  for (const std::string key : {"model.9.weight", "optim.9.weight.exp_avg"}) {
    const int64_t a = stored(ck / "rank-0.safetensors", key),
                  b = stored(ck / "rank-1.safetensors", key);
    EXPECT_GT(a, 0) << key;
    EXPECT_GT(b, 0) << key;
    EXPECT_EQ(a + b, 128 * 3136) << key;
  }

  // Resumed after epoch 1 at 2 ranks: the uninterrupted run's epoch 2, exactly.
  const fs::path at2 = stopped_after_epoch_1(fsdp, "fsdp_at2");
  auto r = run_command(ranks(2, at2, "--strategy fsdp --resume"), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "resuming after epoch 1")) << r.output;
  EXPECT_EQ(metrics_only(rows(at2)), metrics_only(got)) << r.output;

  // Resumed at 1 process (every shard re-cut): as the plain DDP checkpoint of epoch 1 resumed
  // at 1 process.
  const fs::path ddp1 = stopped_after_epoch_1(ddp, "fsdp_ddp1"),
                 at1 = stopped_after_epoch_1(fsdp, "fsdp_at1");
  r = run_command(one(ddp1, "--resume"), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_command(one(at1, "--strategy fsdp --resume"), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "resuming after epoch 1")) << r.output;
  ASSERT_EQ(rows(ddp1).size(), 2u);
  expect_close(rows(at1), rows(ddp1));
  EXPECT_NE(metrics_only(rows(at1)[1]), metrics_only(got[1]));  // not the 2-rank epoch 2
  for (const auto& d : {ddp, fsdp, at2, ddp1, at1}) fs::remove_all(d);
}

TEST(WeftTrainFsdp, SyncBatchNormTrainsAsDdp) {
  if (!have_data()) GTEST_SKIP() << "Debian package dataset-fashion-mnist is missing";
  const fs::path ddp = fresh_dir("fsdp_sbn_ddp"), fsdp = fresh_dir("fsdp_sbn_fsdp"),
                 local = fresh_dir("fsdp_sbn_local");
  const auto got = expect_fsdp_as_ddp(ddp, fsdp, "--batchnorm sync");
  ASSERT_EQ(got.size(), 2u);
  // The statistics over both ranks' batches are not each rank's own: local BatchNorm differs.
  auto r = run_command(ranks(2, local, "--strategy fsdp"), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  ASSERT_EQ(rows(local).size(), 2u);
  EXPECT_NE(csv_cells(rows(local)[0])[1], csv_cells(got[0])[1]);
  for (const auto& d : {ddp, fsdp, local}) fs::remove_all(d);
}
