// weft-train's checkpoints under damage, one process on a Fashion-MNIST subset: a newest
// checkpoint with a flipped byte, or with a NaN saved under valid checksums, is reported and the
// previous one used, reproducing the undamaged run's metrics; every checkpoint unusable is an
// error that leaves metrics.csv as it was; a checkpoint of an older weft-train (no checksums, no
// metrics history) still resumes; a cnn checkpoint with dropout does not resume a run without
// it; stale temp files go; an unwritable checkpoint directory or metrics file stops the run
// before its first epoch.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "weft/ops.h"
#include "weft/serialize.h"
#include "weft/serialize/safetensors_format.h"
#include "weft_train_cli.h"

using weft::test::csv_rows;
using weft::test::file_bytes;
using weft::test::fresh_dir;
using weft::test::metrics_only;
using weft::test::one_process_cmd;
using weft::test::run_command;
using weft::test::write_file;
namespace fs = std::filesystem;

namespace {

bool have_data() { return fs::exists(weft::test::kFashionMnist); }

// The name of the largest tensor in a safetensors file, and where its data starts.
std::pair<std::string, size_t> largest_tensor(const std::string& bytes) {
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + (ptrdiff_t)n);
  std::string best;
  size_t begin = 0, size = 0;
  for (auto& [k, v] : header.items()) {
    if (k == "__metadata__") continue;
    const size_t b = v["data_offsets"][0], e = v["data_offsets"][1];
    if (e - b > size) best = k, begin = b, size = e - b;
  }
  return {best, 8 + n + begin};
}

// Flips one byte in the largest tensor's data; returns that tensor's name.
std::string flip_byte(const fs::path& p) {
  std::string b = file_bytes(p);
  auto [name, offset] = largest_tensor(b);
  b[offset + 100] ^= 0x40;
  write_file(p, b);
  return name;
}

bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

}  // namespace

TEST(WeftTrainCheckpoints, DamagedNewestFallsBackToThePrevious) {
  if (!have_data()) GTEST_SKIP() << "Debian package dataset-fashion-mnist is missing";
  const fs::path dir = fresh_dir("damaged");
  auto r = run_command(one_process_cmd(dir.string(), 2), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  const auto ref = metrics_only(csv_rows((dir / "metrics.csv").string()));
  ASSERT_EQ(ref.size(), 2u);
  const fs::path newest = dir / "epoch-0002.safetensors";

  // A flipped byte: the checksum names the tensor and file, epoch 1 is used, epoch 2 redone.
  const std::string tensor = flip_byte(newest);
  r = run_command(one_process_cmd(dir.string(), 2, "--resume"), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output,
                       "checksum mismatch in tensor '" + tensor + "' of '" + newest.string() + "'"))
      << r.output;
  EXPECT_TRUE(contains(r.output, "trying the previous one")) << r.output;
  EXPECT_TRUE(contains(r.output, "resuming after epoch 1")) << r.output;
  EXPECT_EQ(metrics_only(csv_rows((dir / "metrics.csv").string())), ref) << r.output;

  // A NaN saved with valid checksums (a run that diverged) loads, but weft-train refuses it.
  std::map<std::string, std::string> meta;
  weft::TensorDict all = weft::load(newest.string(), weft::Device::CPU(), &meta);
  weft::Tensor w = all.at("model.0.weight").clone();
  w.data_ptr<float>()[3] = std::numeric_limits<float>::quiet_NaN();
  all.insert_or_assign("model.0.weight", w);
  weft::save(all, newest.string(), meta);
  ASSERT_NO_THROW(weft::load(newest.string()));
  r = run_command(one_process_cmd(dir.string(), 2, "--resume"), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "tensor 'model.0.weight' holds NaN or Inf")) << r.output;
  EXPECT_TRUE(contains(r.output, "resuming after epoch 1")) << r.output;
  EXPECT_EQ(metrics_only(csv_rows((dir / "metrics.csv").string())), ref) << r.output;

  // Every checkpoint damaged: an error, not a fresh start; metrics.csv is left as it was.
  flip_byte(dir / "epoch-0001.safetensors");
  flip_byte(newest);
  const std::string csv = file_bytes(dir / "metrics.csv");
  r = run_command(one_process_cmd(dir.string(), 3, "--resume"), 300);
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "--resume: no usable checkpoint; rank 0's")) << r.output;
  EXPECT_TRUE(contains(r.output, dir.string() + " holds 2 unusable checkpoint(s)")) << r.output;
  EXPECT_FALSE(contains(r.output, "epoch 1/3")) << r.output;
  EXPECT_EQ(file_bytes(dir / "metrics.csv"), csv);
  fs::remove_all(dir);
}

// A checkpoint as weft-train wrote it before checksums and the metrics history: it still
// resumes, keeping the CSV rows of its epochs from metrics.csv.
TEST(WeftTrainCheckpoints, OlderCheckpointsStillResume) {
  if (!have_data()) GTEST_SKIP() << "Debian package dataset-fashion-mnist is missing";
  const fs::path ref = fresh_dir("old_ref"), dir = fresh_dir("old");
  // The lr stepped per epoch: a 1-epoch run's schedule is then a 2-epoch run's first epoch (per
  // step, its cosine would end at 0 within epoch 1).
  const std::string per_epoch = "--lr-interval epoch";
  auto r = run_command(one_process_cmd(ref.string(), 2, per_epoch), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_command(one_process_cmd(dir.string(), 1, per_epoch), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string path = (dir / "epoch-0001.safetensors").string();
  auto file = weft::serialize::SafetensorsFile::read(path);
  std::map<std::string, std::string> meta;
  for (const auto& [k, v] : file.metadata())
    if (k.rfind("weft.xxh64.", 0) != 0 && k != "metrics_history") meta[k] = v;
  ASSERT_LT(meta.size(), file.metadata().size());
  weft::serialize::write_safetensors(path, file.tensors(), meta);
  r = run_command(one_process_cmd(dir.string(), 2, per_epoch + " --resume"), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "resuming after epoch 1")) << r.output;
  EXPECT_EQ(metrics_only(csv_rows((dir / "metrics.csv").string())),
            metrics_only(csv_rows((ref / "metrics.csv").string())))
      << r.output;
  fs::remove_all(ref);
  fs::remove_all(dir);
}

// A cnn checkpoint with a Dropout layer (--dropout > 0, the default before the recipe study)
// and a run without one have different layer numbers: resuming across them is refused, naming
// the option that matches; with it, the run resumes.
TEST(WeftTrainCheckpoints, DropoutMustMatchTheCheckpoint) {
  if (!have_data()) GTEST_SKIP() << "Debian package dataset-fashion-mnist is missing";
  const fs::path dir = fresh_dir("dropout");
  auto r = run_command(one_process_cmd(dir.string(), 1, "--dropout 0.25"), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_command(one_process_cmd(dir.string(), 2, "--resume"), 300);
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output,
                       "checkpoint is of a cnn with a Dropout layer but --dropout is 0 "
                       "(resume with --dropout 0.25, the older default)"))
      << r.output;
  r = run_command(one_process_cmd(dir.string(), 2, "--resume --dropout 0.25"), 300);
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "resuming after epoch 1")) << r.output;
  fs::remove_all(dir);
}

TEST(WeftTrainCheckpoints, StaleTempFilesAreRemoved) {
  if (!have_data()) GTEST_SKIP() << "Debian package dataset-fashion-mnist is missing";
  const fs::path dir = fresh_dir("stale");
  fs::create_directories(dir);
  write_file(dir / "epoch-0003.safetensors.tmp.99999.0", "half a checkpoint");
  write_file(dir / ".weft-write-probe.99999", "");
  write_file(dir / "notes.txt", "not ours");
  auto r = run_command(one_process_cmd(dir.string(), 1), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_FALSE(fs::exists(dir / "epoch-0003.safetensors.tmp.99999.0"));
  EXPECT_FALSE(fs::exists(dir / ".weft-write-probe.99999"));
  EXPECT_TRUE(fs::exists(dir / "notes.txt"));
  EXPECT_TRUE(contains(r.output, "epoch-0003.safetensors.tmp.99999.0, left by a checkpoint write"))
      << r.output;
  EXPECT_TRUE(fs::exists(dir / "epoch-0001.safetensors"));
  fs::remove_all(dir);
}

// The directory is checked before the first epoch: no step runs. Root writes through chmod, so
// the read-only case uses a directory of sysfs, which no one can create files in; the chmod
// case runs where the tests do not run as root.
TEST(WeftTrainCheckpoints, UnwritableDirectoryStopsBeforeTraining) {
  if (!have_data()) GTEST_SKIP() << "Debian package dataset-fashion-mnist is missing";
  const fs::path tmp = fresh_dir("unwritable");
  fs::create_directories(tmp);
  const std::string metrics = " --metrics " + (tmp / "metrics.csv").string();
  auto expect_refused = [&](const std::string& dir, const std::string& why) {
    auto r = run_command(one_process_cmd(dir, 1, metrics), 300);
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_TRUE(contains(r.output, why)) << r.output;
    EXPECT_FALSE(contains(r.output, " step ")) << "no training step may run:\n" << r.output;
  };
  write_file(tmp / "file", "");
  expect_refused((tmp / "file" / "ckpt").string(),
                 "cannot create the checkpoint directory '" + (tmp / "file" / "ckpt").string());

  const int fd = ::open("/sys/kernel/weft-probe", O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd >= 0) {
    ::close(fd);
    ::unlink("/sys/kernel/weft-probe");
  } else if (fs::is_directory("/sys/kernel")) {
    expect_refused("/sys/kernel", "the checkpoint directory '/sys/kernel' is not writable");
  }
  if (::geteuid() != 0) {
    fs::create_directories(tmp / "ro");
    ::chmod((tmp / "ro").c_str(), 0555);
    expect_refused((tmp / "ro").string(),
                   "the checkpoint directory '" + (tmp / "ro").string() + "' is not writable");
    ::chmod((tmp / "ro").c_str(), 0755);
  }
  fs::remove_all(tmp);
}

TEST(WeftTrainCheckpoints, FailedMetricsWriteIsAnError) {
  if (!have_data()) GTEST_SKIP() << "Debian package dataset-fashion-mnist is missing";
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "/dev/full is missing";
  const fs::path dir = fresh_dir("devfull");
  auto r = run_command(one_process_cmd(dir.string(), 1, "--metrics /dev/full"), 300);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "cannot write the metrics file '/dev/full'")) << r.output;
  EXPECT_FALSE(contains(r.output, " step ")) << r.output;
  fs::remove_all(dir);
}
