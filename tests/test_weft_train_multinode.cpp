// weft-train across two nodes with node-local checkpoint directories, as on a cluster: two
// weft-run launchers on this machine (--nnodes 2, one rank each), each node with its own
// --checkpoint-dir. Whichever node lacks the newest usable checkpoint (an empty directory, an
// emptied one, a corrupt file) receives it from the node that has it, and the resumed run's
// metrics equal an uninterrupted run's; two nodes holding different files for the same epoch is
// an error naming both ranks and directories. Nodes whose training data differ cannot hold out
// one validation set: an error naming both ranks' splits. The ranks meet through a file store
// (--init-method file://), so no test races for a port.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>

#include "weft_train_cli.h"

using weft::test::build_dir;
using weft::test::csv_rows;
using weft::test::file_bytes;
using weft::test::fresh_dir;
using weft::test::metrics_only;
using weft::test::run_command;
using weft::test::RunResult;
namespace fs = std::filesystem;

namespace {

struct TwoNodes {
  RunResult node0, node1;
  std::string output() const {
    return "--- node 0 (exit " + std::to_string(node0.code) + ")\n" + node0.output +
           "--- node 1 (exit " + std::to_string(node1.code) + ")\n" + node1.output;
  }
};

// Both nodes' launchers, run at once; `a` and `b` are node 0's and node 1's directories, `extra1`
// options for node 1 only. No LR schedule: runs of different --epochs then follow one
// trajectory, epoch for epoch.
TwoNodes run_two_nodes(const fs::path& a, const fs::path& b, int epochs,
                       const std::string& extra = "", const std::string& extra1 = "") {
  static std::atomic<int> runs{0};
  const fs::path store = fresh_dir("store" + std::to_string(runs++));
  // Node 0's launcher holds the store port even though this job meets through a file: a port of
  // its own keeps it clear of other tests' launchers.
  const std::string port = std::to_string(weft::test::free_port());
  auto cmd = [&](int node, const fs::path& dir) {
    return "env GLOO_SOCKET_IFNAME=lo " + build_dir() +
           "/tools/weft-run --nnodes 2 --nproc-per-node 1 --rdzv-timeout 120 --master-port " +
           port + " --node-rank " + std::to_string(node) + " " + weft::test::weft_train() +
           " --data " + weft::test::fashion_subset() +
           " --batch-size 32 --scheduler none --no-progress --epochs " + std::to_string(epochs) +
           " --checkpoint-dir " + dir.string() + " --init-method file://" + store.string() + " " +
           extra + (node == 1 ? " " + extra1 : std::string());
  };
  TwoNodes r;
  std::thread t([&] { r.node0 = run_command(cmd(0, a), 300); });
  r.node1 = run_command(cmd(1, b), 300);
  t.join();
  fs::remove(store);
  return r;
}

bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

std::vector<std::string> metrics_of(const fs::path& dir) {
  return metrics_only(csv_rows((dir / "metrics.csv").string()));
}

}  // namespace

TEST(WeftTrainMultiNode, ResumeAgreesAcrossNodeLocalDirectories) {
  if (!fs::exists(weft::test::kFashionMnist))
    GTEST_SKIP() << "Debian package dataset-fashion-mnist is missing";
  const fs::path ref0 = fresh_dir("ref0"), ref1 = fresh_dir("ref1");
  const fs::path a = fresh_dir("node0"), b = fresh_dir("node1");
  auto r = run_two_nodes(ref0, ref1, 3);
  ASSERT_TRUE(r.node0.code == 0 && r.node1.code == 0) << r.output();
  const auto ref = metrics_of(ref0);
  ASSERT_EQ(ref.size(), 3u) << r.output();

  // Only rank 0 writes checkpoints: node 1's directory stays empty, and on resume rank 1
  // receives rank 0's checkpoint (it used to start from scratch).
  r = run_two_nodes(a, b, 1);
  ASSERT_TRUE(r.node0.code == 0 && r.node1.code == 0) << r.output();
  ASSERT_FALSE(fs::exists(b / "epoch-0001.safetensors"));
  r = run_two_nodes(a, b, 2, "--resume");
  ASSERT_TRUE(r.node0.code == 0 && r.node1.code == 0) << r.output();
  EXPECT_TRUE(contains(r.node0.output, "rank 1's ")) << r.output();
  EXPECT_TRUE(contains(r.node0.output, b.string() + " has no usable checkpoint: it receives "
                                                    "epoch 1's checkpoint from rank 0"))
      << r.output();
  EXPECT_TRUE(contains(r.node0.output, "resuming after epoch 1")) << r.output();
  EXPECT_EQ(metrics_of(a), std::vector<std::string>(ref.begin(), ref.begin() + 2)) << r.output();

  // Node 0's directory lost, node 1 holding the checkpoints: rank 0 receives the newest and
  // rebuilds metrics.csv from the rows it carries.
  fs::create_directories(b);
  for (const char* f : {"epoch-0001.safetensors", "epoch-0002.safetensors"})
    fs::rename(a / f, b / f);
  fs::remove_all(a);
  r = run_two_nodes(a, b, 3, "--resume");
  ASSERT_TRUE(r.node0.code == 0 && r.node1.code == 0) << r.output();
  EXPECT_TRUE(contains(r.node0.output, "resuming after epoch 2 from rank 1's ")) << r.output();
  EXPECT_EQ(metrics_of(a), ref) << r.output();

  // Node 0's newest corrupt: it has nothing usable, node 1's epoch 2 is the newest usable.
  std::string bytes = file_bytes(a / "epoch-0003.safetensors");
  bytes[bytes.size() - 5] ^= 0x01;
  weft::test::write_file(a / "epoch-0003.safetensors", bytes);
  r = run_two_nodes(a, b, 3, "--resume");
  ASSERT_TRUE(r.node0.code == 0 && r.node1.code == 0) << r.output();
  EXPECT_TRUE(contains(r.node0.output, "checksum mismatch in tensor")) << r.output();
  EXPECT_TRUE(contains(r.node0.output, "resuming after epoch 2 from rank 1's ")) << r.output();
  EXPECT_EQ(metrics_of(a), ref) << r.output();

  // Different files for the same newest epoch (one of another run): no guessing, an error
  // naming both ranks' files; metrics.csv is left as it was.
  fs::copy_file(ref0 / "epoch-0003.safetensors", b / "epoch-0003.safetensors");
  const std::string csv = file_bytes(a / "metrics.csv");
  r = run_two_nodes(a, b, 3, "--resume");
  EXPECT_NE(r.node0.code, 0) << r.output();
  EXPECT_NE(r.node1.code, 0) << r.output();
  EXPECT_TRUE(contains(r.node0.output, "--resume: ranks disagree on epoch 3: rank 0's "))
      << r.output();
  EXPECT_TRUE(contains(r.node0.output, a.string() + "/epoch-0003.safetensors and rank 1's "))
      << r.output();
  EXPECT_TRUE(contains(r.node0.output, b.string() + "/epoch-0003.safetensors differ"))
      << r.output();
  EXPECT_EQ(file_bytes(a / "metrics.csv"), csv);
  for (const auto& d : {ref0, ref1, a, b}) fs::remove_all(d);
}

// The validation split is checked across ranks: node 1 with fewer training images (a different
// file on a node-local disk) would hold out other images, so the job stops before training.
TEST(WeftTrainMultiNode, ValidationSplitMustAgreeAcrossNodes) {
  if (!fs::exists(weft::test::kFashionMnist))
    GTEST_SKIP() << "Debian package dataset-fashion-mnist is missing";
  const fs::path a = fresh_dir("val0"), b = fresh_dir("val1");
  auto r = run_two_nodes(a, b, 1, "--val-split 64", "--limit-train 448");
  EXPECT_NE(r.node0.code, 0) << r.output();
  EXPECT_NE(r.node1.code, 0) << r.output();
  EXPECT_TRUE(contains(r.output(),
                       "--val-split: ranks hold out different validation sets: rank 0 splits 512 "
                       "training images into 448 + 64, rank 1 448 into 384 + 64"))
      << r.output();
  EXPECT_FALSE(fs::exists(a / "metrics.csv")) << r.output();
  // The same data on both: it trains, validating on the same 64 images.
  r = run_two_nodes(a, b, 1, "--val-split 64");
  ASSERT_TRUE(r.node0.code == 0 && r.node1.code == 0) << r.output();
  EXPECT_TRUE(contains(r.node0.output, "64 training images held out for validation")) << r.output();
  for (const auto& d : {a, b}) fs::remove_all(d);
}
