// cuBLAS is opened on first use (src/cuda/lazy_cublas.cpp): a process of a CUDA build that does
// CPU work only never maps it; the first matrix product on a GPU does. The first test runs on
// machines without a GPU (CI), the second on GPU machines.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "cuda_test.h"
#include "weft/ops.h"

namespace {

bool mapped(const std::string& library) {
  std::ifstream maps("/proc/self/maps");
  std::stringstream all;
  all << maps.rdbuf();
  return all.str().find(library) != std::string::npos;
}

}  // namespace

TEST(CudaLibraries, CpuWorkLeavesCublasUnloaded) {
  // Where a GPU is present, GPU tests earlier in this process may have loaded it.
  if (weft::cuda::is_available()) GTEST_SKIP() << "a GPU is present: checked on CPU machines";
  weft::Tensor a = weft::randn({64, 64}), b = weft::randn({64, 64});
  EXPECT_EQ(weft::matmul(a, b).size(0), 64);
  EXPECT_FALSE(mapped("libcublas")) << "cuBLAS was loaded by CPU-only work";
}

TEST(CudaLibraries, FirstGpuProductLoadsCublas) {
  SKIP_WITHOUT_CUDA();
  // Meaningful in a process of its own (ctest runs each test alone); in a whole-binary run an
  // earlier GPU test has loaded it already.
  if (mapped("libcublas"))
    GTEST_SKIP() << "cuBLAS already loaded by an earlier test in this process";
  const weft::Device gpu = weft::Device::CUDA(0);
  weft::Tensor a = weft::randn({8, 8}).to(gpu), b = weft::randn({8, 8}).to(gpu);
  EXPECT_FALSE(mapped("libcublas")) << "copies to the GPU loaded cuBLAS";
  weft::Tensor c = weft::matmul(a, b).to(weft::Device::CPU());
  EXPECT_TRUE(weft::allclose(c, weft::matmul(a.to(weft::Device::CPU()), b.to(weft::Device::CPU())),
                             1e-5, 1e-5));
  EXPECT_TRUE(mapped("libcublas"));
}
