// ProcessGroupNCCL across processes: tests/cuda/nccl_worker.cpp ranks under weft-run, one GPU
// each. A world of 1 on any GPU machine, a world of every GPU where there are several, and a
// timeout scenario (needs 2 GPUs). Skips without a CUDA device.
#include <gtest/gtest.h>

#include "cuda_test.h"
#include "subprocess.h"
#include "weft/cuda.h"

using weft::test::build_dir;
using weft::test::run_command;

namespace {

weft::test::RunResult launch(int nproc, const std::string& scenario, int seconds = 180) {
  return run_command(build_dir() + "/tools/weft-run --nproc-per-node " + std::to_string(nproc) +
                         " --standalone " + build_dir() +
                         "/tests/cuda/nccl_worker " + scenario,
                     seconds);
}

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

}  // namespace

TEST(CudaNCCL, CollectivesWorldOfOne) {
  SKIP_WITHOUT_CUDA();
  auto r = launch(1, "collectives");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(count(r.output, "OK collectives"), 1) << r.output;
}

TEST(CudaNCCL, CollectivesOneRankPerGpu) {
  const int n = weft::cuda::device_count();
  if (n < 2) GTEST_SKIP() << "needs 2 or more CUDA devices, found " << n;
  auto r = launch(n, "collectives");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(count(r.output, "OK collectives"), n) << r.output;
}

TEST(CudaNCCL, MissingPeerTimesOutAndAborts) {
  const int n = weft::cuda::device_count();
  if (n < 2) GTEST_SKIP() << "needs 2 CUDA devices, found " << n;
  auto r = launch(2, "timeout", 60);
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(count(r.output, "OK timeout"), 2) << r.output;
}
