// weft links OpenBLAS's OpenMP build, so that BLAS and weft's kernels share libgomp's pool.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include "weft/ops.h"

TEST(Threads, OpenBlasIsTheOpenMPBuild) {
  // libopenblas is loaded with libweft; look it up at run time (the tests don't link it).
  auto get_parallel = (int (*)())dlsym(RTLD_DEFAULT, "openblas_get_parallel");
  ASSERT_NE(get_parallel, nullptr);
  EXPECT_EQ(get_parallel(), 2) << "0 = single-threaded build, 1 = pthread build, 2 = OpenMP build";
}

TEST(Threads, SetNumThreadsRoundTrips) {
  const int before = weft::get_num_threads();
  weft::set_num_threads(2);
  EXPECT_EQ(weft::get_num_threads(), 2);
  weft::set_num_threads(1);
  EXPECT_EQ(weft::get_num_threads(), 1);
  weft::set_num_threads(before);
}
