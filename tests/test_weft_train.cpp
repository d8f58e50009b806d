// weft-train end to end on a subset of Fashion-MNIST: 2 ranks through weft-run learn (loss
// falls, accuracy far above chance); a run killed mid-epoch resumes and reproduces the
// uninterrupted run's metrics exactly; a damaged newest checkpoint falls back to the
// previous one; the learning rate follows PyTorch's CosineAnnealingLR per step (or per epoch);
// --val-split holds out a validation set; bad options and data fail with a clear message.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "subprocess.h"
#include "weft/cuda.h"
#include "weft_train_cli.h"

extern char** environ;

using weft::test::build_dir;
using weft::test::csv_rows;
using weft::test::fresh_dir;
using weft::test::metrics_only;
using weft::test::run_command;
namespace fs = std::filesystem;

namespace {

const char* kData = weft::test::kFashionMnist;

std::string train_cmd(const std::string& dir, int epochs, const std::string& extra = "") {
  return weft::test::two_rank_cmd(dir, epochs, extra);
}

}  // namespace

TEST(WeftTrain, TwoRanksLearn) {
  if (!fs::exists(kData))
    GTEST_SKIP() << kData << " is missing (Debian package dataset-fashion-mnist)";
  auto dir = fresh_dir("learn");
  auto r = run_command(train_cmd(dir.string(), 1), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  auto rows = csv_rows((dir / "metrics.csv").string());
  ASSERT_EQ(rows.size(), 1u) << r.output;
  double acc = std::stod(weft::test::csv_cells(rows[0])[3]);
  EXPECT_GT(acc, 0.5) << "chance is 0.1\n" << r.output;
  // Progress lines report the running loss: it falls during the epoch.
  std::vector<double> losses;
  std::stringstream ss(r.output);
  std::string line;
  while (std::getline(ss, line)) {
    auto p = line.find(" loss ");
    if (line.find("step ") != std::string::npos && p != std::string::npos)
      losses.push_back(std::stod(line.substr(p + 6)));
  }
  ASSERT_GE(losses.size(), 2u) << r.output;
  EXPECT_LT(losses.back(), losses.front()) << r.output;
  EXPECT_TRUE(fs::exists(dir / "epoch-0001.safetensors"));
  EXPECT_EQ(r.output.find("[rank1]:"), std::string::npos) << "only rank 0 prints:\n" << r.output;
  fs::remove_all(dir);
}

TEST(WeftTrain, KilledRunResumesExactly) {
  if (!fs::exists(kData))
    GTEST_SKIP() << kData << " is missing (Debian package dataset-fashion-mnist)";
  auto ref_dir = fresh_dir("ref"), dir = fresh_dir("killed");
  auto ref = run_command(train_cmd(ref_dir.string(), 3), 300);
  ASSERT_EQ(ref.code, 0) << ref.output;
  // Start the same run, kill it once epoch 1's checkpoint exists (inside epoch 2).
  std::string cmd = train_cmd(dir.string(), 3) + " > " + (dir.string() + ".log") + " 2>&1";
  fs::create_directories(dir);
  pid_t pid;
  const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);  // its own group: killed as one
  posix_spawnattr_setpgroup(&attr, 0);
  ASSERT_EQ(posix_spawn(&pid, "/bin/sh", nullptr, &attr, const_cast<char**>(argv), environ), 0);
  posix_spawnattr_destroy(&attr);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(dir / "epoch-0001.safetensors") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fs::exists(dir / "epoch-0001.safetensors"));
  ::kill(-pid, SIGTERM);  // weft-run forwards it to the ranks
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the run should have been stopped";
  auto resumed = run_command(train_cmd(dir.string(), 3, "--resume"), 300);
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resuming after epoch"), std::string::npos) << resumed.output;
  auto a = csv_rows((ref_dir / "metrics.csv").string()),
       b = csv_rows((dir / "metrics.csv").string());
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u) << resumed.output;
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(metrics_only(a[i]), metrics_only(b[i]));

  // A damaged newest checkpoint: reported, and the previous one is used.
  {
    std::ofstream f(ref_dir / "epoch-0003.safetensors", std::ios::trunc | std::ios::binary);
    f << "garbage";
  }
  auto again = run_command(train_cmd(ref_dir.string(), 3, "--resume"), 300);
  ASSERT_EQ(again.code, 0) << again.output;
  EXPECT_NE(again.output.find("unusable"), std::string::npos) << again.output;
  EXPECT_NE(again.output.find("resuming after epoch 2"), std::string::npos) << again.output;
  auto c = csv_rows((ref_dir / "metrics.csv").string());
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(metrics_only(c[2]), metrics_only(a[2]));
  fs::remove_all(ref_dir);
  fs::remove_all(dir);
  fs::remove(dir.string() + ".log");
}

// One process under --amp: bf16 learns; fp16's loss scaler state (backed off by the overflows of
// the first steps) goes into the checkpoint, so a resumed run repeats the uninterrupted one.
TEST(WeftTrain, MixedPrecisionLearnsAndResumes) {
  if (!fs::exists(kData))
    GTEST_SKIP() << kData << " is missing (Debian package dataset-fashion-mnist)";
  auto cmd = [](const fs::path& dir, int epochs, const std::string& extra) {
    return build_dir() +
           "/tools/weft-train --limit-train 1536 --limit-test 500 --batch-size 32 --epochs " +
           std::to_string(epochs) + " --checkpoint-dir " + dir.string() + " --no-progress " + extra;
  };
  auto bf16 = fresh_dir("bf16");
  // lr 0.02: 48 steps at the default 0.05 (momentum 0.9) end anywhere between 50% and 68%
  // accuracy depending on the shuffle order and the build's rounding; at 0.02, 67-76%.
  auto r = run_command(cmd(bf16, 1, "--amp bf16 --lr 0.02"), 120);
  ASSERT_EQ(r.code, 0) << r.output;
  auto rows = csv_rows((bf16 / "metrics.csv").string());
  ASSERT_EQ(rows.size(), 1u) << r.output;
  std::stringstream row(rows[0]);
  std::string cell;
  for (int i = 0; i < 4; ++i) std::getline(row, cell, ',');
  EXPECT_GT(std::stod(cell), 0.5) << "chance is 0.1\n" << r.output;

  // The lr stepped per epoch, so that a 1-epoch run is a 2-epoch run's first epoch.
  auto ref = fresh_dir("fp16_ref"), split = fresh_dir("fp16_split");
  r = run_command(cmd(ref, 2, "--amp fp16 --lr-interval epoch"), 120);
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_command(cmd(split, 1, "--amp fp16 --lr-interval epoch"), 120);
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_command(cmd(split, 2, "--amp fp16 --lr-interval epoch --resume"), 120);
  ASSERT_EQ(r.code, 0) << r.output;
  auto a = csv_rows((ref / "metrics.csv").string()), b = csv_rows((split / "metrics.csv").string());
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u) << r.output;
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(metrics_only(a[i]), metrics_only(b[i]));
  r = run_command(build_dir() + "/tools/weft-train --amp fp8", 30);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find("--amp fp8: must be auto, none, bf16 or fp16"), std::string::npos)
      << r.output;
  // The default, auto: bf16 exactly where the CPU lists bf16 arithmetic among its flags.
  std::ifstream cpuinfo("/proc/cpuinfo");
  bool has_bf16 = false;
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("flags", 0) == 0)
      has_bf16 = has_bf16 || line.find(" avx512_bf16") != std::string::npos ||
                 line.find(" amx_bf16") != std::string::npos;
  auto dflt = fresh_dir("amp_auto");
  r = run_command(build_dir() + "/tools/weft-train --limit-train 64 --limit-test 64 --epochs 1 " +
                      "--no-progress --checkpoint-dir " + dflt.string(),
                  120);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(r.output.find("forward under bf16 autocast") != std::string::npos, has_bf16)
      << r.output;
  for (const auto& d : {bf16, ref, split, dflt}) fs::remove_all(d);
}

TEST(WeftTrain, BadOptionsAndData) {
  auto r = run_command(build_dir() + "/tools/weft-train --epochs zero", 30);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find("--epochs zero: expects an integer"), std::string::npos) << r.output;
  r = run_command(build_dir() + "/tools/weft-train --model resnet", 30);
  EXPECT_EQ(r.code, 2);
  r = run_command(build_dir() + "/tools/weft-train --data /nonexistent", 30);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("/nonexistent"), std::string::npos) << r.output;
  r = run_command(build_dir() + "/tools/weft-train --help", 30);
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.output.find("--nproc-per-node"), std::string::npos);
}

TEST(WeftTrain, UnderMpirun) {
  if (!fs::exists(kData))
    GTEST_SKIP() << kData << " is missing (Debian package dataset-fashion-mnist)";
  if (!weft::test::have_mpirun()) GTEST_SKIP() << "mpirun (openmpi-bin) is not installed";
  auto dir = fresh_dir("mpi");
  auto r = run_command(
      "mpirun --allow-run-as-root --oversubscribe -n 2 --mca btl self,tcp --mca btl_tcp_if_include "
      "lo " +
          build_dir() +
          "/tools/weft-train --limit-train 1024 --limit-test 200 --epochs 1 --no-progress "
          "--checkpoint-dir " +
          dir.string(),
      300);
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("2 processes"), std::string::npos) << r.output;
  EXPECT_EQ(csv_rows((dir / "metrics.csv").string()).size(), 1u) << r.output;
  fs::remove_all(dir);
}

namespace {

// weft-train's stderr and stdout for `args`, and its exit status.
weft::test::RunResult weft_train_with(const std::string& args) {
  return run_command(build_dir() + "/tools/weft-train " + args, 30);
}

bool has(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

size_t lines(const std::string& s) { return (size_t)std::count(s.begin(), s.end(), '\n'); }

}  // namespace

// A usage error names the flag and the value and points at --help in two lines, without the
// usage text; an unknown flag suggests the nearest known one when it is close; a runtime error
// is one line with status 1; --help prints everything.
TEST(WeftTrain, OptionMessages) {
  const std::pair<const char*, const char*> range_errors[] = {
      {"--epochs -1", "weft-train: --epochs -1: must be a positive integer\n"},
      {"--batch-size 0", "weft-train: --batch-size 0: must be a positive integer\n"},
      {"--threads=0", "weft-train: --threads 0: must be a positive integer\n"},
      {"--workers -2", "weft-train: --workers -2: must be 0 or more\n"},
      {"--limit-train -5", "weft-train: --limit-train -5: must be 0 (all) or more\n"},
      {"--lr -0.1", "weft-train: --lr -0.1: must be a positive number\n"},
      {"--weight-decay -1", "weft-train: --weight-decay -1: must be 0 or more\n"},
      {"--dropout 1", "weft-train: --dropout 1: must be a probability in [0, 1)\n"},
      {"--val-split 2.5", "weft-train: --val-split 2.5: must be a number of samples"},
      {"--lr-interval batch", "weft-train: --lr-interval batch: must be step or epoch\n"},
      {"--batchnorm none", "weft-train: --batchnorm none: must be sync or local\n"},
      {"--model resnet", "weft-train: --model resnet: must be cnn, shufflenet or mlp\n"},
      {"--seed -3", "weft-train: --seed -3: expects an integer\n"},
      {"--epochs 99999999999", "weft-train: --epochs 99999999999: expects an integer\n"},
      {"--epochs", "weft-train: --epochs needs a value\n"},
      {"--resume=yes", "weft-train: --resume takes no value, got '--resume=yes'\n"},
      {"epochs", "weft-train: unexpected argument 'epochs' (options start with --)\n"},
  };
  for (const auto& [args, want] : range_errors) {
    auto r = weft_train_with(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.output;
    EXPECT_EQ(r.output.rfind(want, 0), 0u) << args << "\n" << r.output;
    EXPECT_TRUE(has(r.output, "see weft-train --help")) << r.output;
    EXPECT_EQ(lines(r.output), 2u) << "no usage text:\n" << r.output;
  }
  // Unknown flags: the nearest known one when it is a typo away, none when nothing is close.
  const std::pair<const char*, const char*> unknown[] = {
      {"--epoch 3", "unknown option --epoch (did you mean --epochs?)"},
      {"--batchsize=32", "unknown option --batchsize (did you mean --batch-size?)"},
      {"--reusme", "unknown option --reusme (did you mean --resume?)"},
      {"-lr 0.1", "unknown option -lr (did you mean --lr?)"},
      {"--val-spilt 5000", "unknown option --val-spilt (did you mean --val-split?)"},
      {"--hepl", "unknown option --hepl (did you mean --help?)"},
  };
  for (const auto& [args, want] : unknown) {
    auto r = weft_train_with(args);
    EXPECT_EQ(r.code, 2) << args;
    EXPECT_TRUE(has(r.output, std::string("weft-train: ") + want + "\n")) << args << r.output;
  }
  for (const char* args : {"--learning-rate 0.1", "--frobnicate 1", "--gpus 2"}) {
    auto r = weft_train_with(args);
    EXPECT_EQ(r.code, 2) << args;
    EXPECT_TRUE(has(r.output, "unknown option")) << r.output;
    EXPECT_FALSE(has(r.output, "did you mean")) << args << ": nothing is close\n" << r.output;
  }
  // Runtime errors: one line, status 1, no usage.
  auto r = weft_train_with("--data /nonexistent --no-progress --checkpoint-dir /nonexistent/c");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.output.rfind("weft-train: error: ", 0), 0u) << r.output;
  EXPECT_TRUE(has(r.output, "/nonexistent")) << r.output;
  EXPECT_EQ(lines(r.output), 1u) << r.output;
  if (!weft::cuda::is_available()) {
    r = weft_train_with("--device cuda");
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.output.rfind("weft-train: error: --device cuda", 0), 0u) << r.output;
    EXPECT_EQ(lines(r.output), 1u) << r.output;
  }
  r = weft_train_with("--help");
  EXPECT_EQ(r.code, 0);
  for (const char* flag : {"--val-split", "--lr-interval", "--dropout", "--batchnorm", "--epochs"})
    EXPECT_TRUE(has(r.output, flag)) << flag << "\n" << r.output;
}

namespace {

// (global step, lr) from the progress lines "epoch E/N step k/S loss L lr X ...".
std::vector<std::pair<int64_t, double>> lrs_of(const std::string& output) {
  std::vector<std::pair<int64_t, double>> out;
  std::stringstream ss(output);
  std::string line;
  while (std::getline(ss, line)) {
    int epoch = 0, epochs = 0;
    long long step = 0, steps = 0;
    double loss = 0, lr = 0;
    if (std::sscanf(line.c_str(), "epoch %d/%d step %lld/%lld loss %lf lr %lf", &epoch, &epochs,
                    &step, &steps, &loss, &lr) == 6)
      out.emplace_back((epoch - 1) * steps + step, lr);
  }
  return out;
}

}  // namespace

// The lr each optimizer step takes, against PyTorch's CosineAnnealingLR in closed form: stepped
// after every optimizer step with T_max = epochs x steps per epoch, step t (from 1) takes
// lr0 (1 + cos(pi (t - 1) / T_max)) / 2; stepped per epoch, epoch e's steps take
// lr0 (1 + cos(pi (e - 1) / epochs)) / 2. A resumed run continues the per-step schedule.
TEST(WeftTrain, LearningRateScheduleMatchesPyTorch) {
  if (!fs::exists(kData))
    GTEST_SKIP() << kData << " is missing (Debian package dataset-fashion-mnist)";
  const double pi = std::acos(-1.0), lr0 = 0.05;
  const int64_t total = 3 * 8;  // 256 images in batches of 32, 3 epochs
  auto dir = fresh_dir("lr_step");
  auto r = run_command(weft::test::one_process_cmd(dir.string(), 3), 120);
  ASSERT_EQ(r.code, 0) << r.output;
  auto lrs = lrs_of(r.output);
  ASSERT_EQ(lrs.size(), 12u) << r.output;  // steps 2, 4, 6, 8 of each epoch
  for (const auto& [t, lr] : lrs)
    EXPECT_NEAR(lr, lr0 * (1 + std::cos(pi * (double)(t - 1) / (double)total)) / 2, 1e-8)
        << "step " << t;
  // Stopped after epoch 1 and resumed: epochs 2 and 3 take the same lrs.
  auto split = fresh_dir("lr_split");
  r = run_command(weft::test::one_process_cmd(split.string(), 3, "--epochs 1"), 120);
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_command(weft::test::one_process_cmd(split.string(), 3, "--resume"), 120);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(lrs_of(r.output), std::vector(lrs.begin() + 4, lrs.end())) << r.output;

  auto per_epoch = fresh_dir("lr_epoch");
  r = run_command(weft::test::one_process_cmd(per_epoch.string(), 3, "--lr-interval epoch"), 120);
  ASSERT_EQ(r.code, 0) << r.output;
  lrs = lrs_of(r.output);
  ASSERT_EQ(lrs.size(), 12u) << r.output;
  for (const auto& [t, lr] : lrs)
    EXPECT_NEAR(lr, lr0 * (1 + std::cos(pi * (double)((t - 1) / 8) / 3.0)) / 2, 1e-8)
        << "step " << t;
  for (const auto& d : {dir, split, per_epoch}) fs::remove_all(d);
}

// --val-split: the banner counts the held-out images, every epoch reports validation loss and
// accuracy, the test set only after the last; a fraction holds out that share. The split is
// torch.utils.data.random_split's (RandomSplit.SameAsPyTorch) and is checked across ranks
// (WeftTrainMultiNode.ValidationSplitMustAgreeAcrossNodes).
TEST(WeftTrain, ValidationSplit) {
  if (!fs::exists(kData))
    GTEST_SKIP() << kData << " is missing (Debian package dataset-fashion-mnist)";
  auto dir = fresh_dir("val");
  auto r = run_command(train_cmd(dir.string(), 2, "--val-split 256"), 300);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "1280 training and 500 test images")) << r.output;
  EXPECT_TRUE(has(r.output, "256 training images held out for validation")) << r.output;
  std::string header;
  std::getline(std::ifstream(dir / "metrics.csv") >> std::ws, header);
  EXPECT_EQ(
      header,
      "epoch,train_loss,test_loss,test_accuracy,images_per_sec,seconds,val_loss,val_accuracy");
  auto rows = csv_rows((dir / "metrics.csv").string());
  ASSERT_EQ(rows.size(), 2u) << r.output;
  const auto first = weft::test::csv_cells(rows[0]), last = weft::test::csv_cells(rows[1]);
  ASSERT_EQ(first.size(), 8u) << rows[0];
  ASSERT_EQ(last.size(), 8u) << rows[1];
  EXPECT_EQ(first[2], "") << "no test figures before the last epoch: " << rows[0];
  EXPECT_EQ(first[3], "") << rows[0];
  EXPECT_GT(std::stod(first[7]), 0.5) << "validation accuracy; chance is 0.1\n" << r.output;
  EXPECT_GT(std::stod(last[7]), 0.5) << r.output;
  EXPECT_GT(std::stod(last[3]), 0.5) << "test accuracy after the last epoch\n" << r.output;
  EXPECT_TRUE(has(r.output, "epoch 1/2: train loss")) << r.output;
  EXPECT_TRUE(has(r.output, "val accuracy")) << r.output;
  // The reported accuracy is the share of the 256 held-out images classified right.
  const double correct = std::stod(first[7]) * 256;
  EXPECT_NEAR(correct, std::round(correct), 1e-3) << rows[0];

  auto frac = fresh_dir("val_frac");
  r = run_command(weft::test::one_process_cmd(frac.string(), 1, "--val-split 0.25"), 120);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "192 training and 100 test images")) << r.output;
  EXPECT_TRUE(has(r.output, "64 training images held out for validation")) << r.output;
  r = run_command(weft::test::one_process_cmd(frac.string(), 1, "--val-split 256"), 120);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(has(r.output,
                  "--val-split 256 holds out 256 of the 256 training images, leaving "
                  "none to train on"))
      << r.output;
  for (const auto& d : {dir, frac}) fs::remove_all(d);
}
