// PowerSGD as a DDP communication hook (weft/distributed/ddp_comm_hooks/powersgd_hook.h), with
// real ranks under weft-run: full rank reproduces one process on the whole batch; rank 1 with
// error feedback still trains while sending a fraction of the elements.
#include <gtest/gtest.h>

#include "subprocess.h"

using weft::test::build_dir;
using weft::test::run_command;

namespace {

weft::test::RunResult launch(int nproc, const std::string& mode) {
  return run_command(build_dir() + "/tools/weft-run --standalone --nproc-per-node " +
                         std::to_string(nproc) + " " + build_dir() +
                         "/tests/distributed/powersgd_worker " + mode,
                     600);
}

}  // namespace

TEST(PowerSGD, FullRankEqualsOneProcess) {
  for (int n : {2, 3}) {
    auto r = launch(n, "exact");
    EXPECT_EQ(r.code, 0) << "world " << n << "\n" << r.output;
  }
}

TEST(PowerSGD, RankOneStillTrains) {
  auto r = launch(2, "converges");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("[rank0]: rank 0: converges"), std::string::npos) << r.output;
}
