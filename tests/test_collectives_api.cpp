// torch.distributed's free-function collectives (weft/distributed/collectives_api.h) with real
// processes under weft-run: the checks run in weft_pg_worker's "free_collectives" scenario
// (tests/distributed/free_collectives.h), against closed forms; here, that every rank passed.
#include <gtest/gtest.h>

#include "subprocess.h"
#include "weft/distributed/distributed.h"

using weft::test::build_dir;
using weft::test::run_command;

namespace {

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

}  // namespace

TEST(CollectivesApi, FreeFunctionsOnDefaultAndSubgroups) {
  for (int n : {3, 4}) {
    const auto r =
        run_command(build_dir() + "/tools/weft-run --nproc-per-node " + std::to_string(n) +
                        " --standalone " + build_dir() + "/tests/weft_pg_worker free_collectives",
                    300);
    EXPECT_EQ(r.code, 0) << "world " << n << "\n" << r.output;
    EXPECT_EQ(count(r.output, "free collectives"), n) << r.output;
  }
}

TEST(CollectivesApi, WithoutAProcessGroupTheErrorSaysSo) {
  // In this process no group is initialized: the default group cannot be resolved.
  ASSERT_FALSE(weft::dist::is_initialized());
  weft::Tensor t = weft::make_empty({2}, weft::kFloat32);
  try {
    weft::dist::all_reduce(t);
    FAIL() << "no DistError";
  } catch (const weft::DistError& e) {
    EXPECT_NE(std::string(e.what()).find("call init_process_group() first"), std::string::npos)
        << e.what();
  }
}
