// weft-train --strategy zero (DDP with ZeroRedundancyOptimizer, sharded checkpoints) on a
// Fashion-MNIST subset with Adam: 2 ranks train exactly as --strategy ddp does; each epoch's
// checkpoint is a distributed checkpoint whose optimizer state is split between the ranks' files;
// resuming from epoch 1 at 2 ranks reproduces the uninterrupted run, and at 1 process reproduces
// the plain DDP checkpoint resumed at 1 process; a damaged newest checkpoint falls back to the
// previous one; an unknown strategy is refused.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "weft/serialize.h"
#include "weft_train_cli.h"

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
  return metrics_only(csv_rows((dir / "metrics.csv").string()));
}

bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

// A copy of `from` holding only its epoch-1 checkpoint: what a run stopped in epoch 2 leaves.
fs::path stopped_after_epoch_1(const fs::path& from, const std::string& name) {
  const fs::path to = fresh_dir(name);
  fs::copy(from, to, fs::copy_options::recursive);
  fs::remove_all(to / "epoch-0002.dcp");
  fs::remove(to / "epoch-0002.safetensors");
  return to;
}

// The optimizer-state keys with data in one rank's file of a sharded checkpoint.
std::set<std::string> state_keys(const fs::path& file) {
  std::set<std::string> keys;
  for (const auto& [k, t] : weft::load(file.string()))
    if (k.rfind("optim.", 0) == 0 && t.numel() > 0) keys.insert(k.substr(0, k.find('@')));
  return keys;
}

}  // namespace

TEST(WeftTrainZero, TrainsAsDdpAndResumesAtAnyWorldSize) {
  if (!have_data()) GTEST_SKIP() << "Debian package dataset-fashion-mnist is missing";
  const fs::path ddp = fresh_dir("zero_ddp"), zero = fresh_dir("zero_zero");
  auto r = run_command(ranks(2, ddp, ""), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_command(ranks(2, zero, "--strategy zero"), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  const auto ref = rows(ddp);
  ASSERT_EQ(ref.size(), 2u);
  EXPECT_EQ(rows(zero), ref) << r.output;

  // Sharded: the two newest checkpoints are directories with one file per rank; every Adam
  // state tensor lies in exactly one rank's file, and each rank holds some.
  const fs::path ck = zero / "epoch-0002.dcp";
  ASSERT_TRUE(fs::exists(ck / "index"));
  EXPECT_TRUE(fs::exists(zero / "epoch-0001.dcp"));
  EXPECT_FALSE(fs::exists(zero / "epoch-0002.safetensors"));
  const auto a = state_keys(ck / "rank-0.safetensors"), b = state_keys(ck / "rank-1.safetensors");
  EXPECT_FALSE(a.empty());
  EXPECT_FALSE(b.empty());
  for (const auto& k : a) EXPECT_EQ(b.count(k), 0u) << k << " is on both ranks";
  std::set<std::string> plain;  // the unsharded optimizer's state tensors
  for (const auto& [k, t] : weft::load((ddp / "epoch-0002.safetensors").string()))
    if (k.rfind("optim.", 0) == 0) plain.insert(k);
  std::set<std::string> both = a;
  both.insert(b.begin(), b.end());
  EXPECT_EQ(both, plain);

  // Resumed after epoch 1 at 2 ranks: the uninterrupted run's epoch 2.
  const fs::path at2 = stopped_after_epoch_1(zero, "zero_at2");
  r = run_command(ranks(2, at2, "--zero --resume"), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "resuming after epoch 1")) << r.output;
  EXPECT_EQ(rows(at2), ref) << r.output;

  // Resumed at 1 process: as the plain DDP checkpoint of epoch 1 resumed at 1 process.
  const fs::path ddp1 = stopped_after_epoch_1(ddp, "zero_ddp1"),
                 at1 = stopped_after_epoch_1(zero, "zero_at1");
  r = run_command(one(ddp1, "--resume"), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_command(one(at1, "--strategy zero --resume"), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "resuming after epoch 1")) << r.output;
  ASSERT_EQ(rows(ddp1).size(), 2u);
  EXPECT_EQ(rows(at1), rows(ddp1)) << r.output;
  EXPECT_EQ(rows(at1)[0], ref[0]);

  // A flipped byte in rank 1's file of the newest: named, and epoch 1 is used instead.
  const fs::path file = at2 / "epoch-0002.dcp" / "rank-1.safetensors";
  std::string bytes = weft::test::file_bytes(file);
  bytes[bytes.size() - 5] ^= 0x40;
  weft::test::write_file(file, bytes);
  r = run_command(ranks(2, at2, "--zero --resume"), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "epoch-0002.dcp is unusable")) << r.output;
  EXPECT_TRUE(contains(r.output, "checksum mismatch")) << r.output;
  EXPECT_TRUE(contains(r.output, "resuming after epoch 1")) << r.output;
  EXPECT_EQ(rows(at2), ref) << r.output;
  for (const auto& d : {ddp, zero, at2, ddp1, at1}) fs::remove_all(d);
}

TEST(WeftTrainZero, UnknownStrategyIsRefused) {
  auto r = run_command(weft::test::weft_train() + " --strategy zero3", 60);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--strategy zero3: must be ddp, zero or fsdp")) << r.output;
}
