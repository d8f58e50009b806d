// Dispatch stubs (Note [Device dispatch] in docs/ARCHITECTURE.md): every op is declared once and
// has a CPU kernel registered by the library's static initialisers; in CUDA builds every op but
// the CPU-only fused ones has a CUDA kernel too; a device type without a kernel throws a
// weft::Error naming the op.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "error_message.h"
#include "ops/dispatch.h"
#include "weft/cuda.h"
#include "weft/ops.h"

namespace {

using weft::Device;
using weft::DeviceType;
using weft::Tensor;

// Ops whose CUDA side is composed from other ops: they have a fused CPU kernel only.
const std::set<std::string> kCpuOnly = {"addmm",
                                        "mse_loss",
                                        "mse_loss_backward",
                                        "batch_norm_relu_elemt",
                                        "batch_norm_relu_backward",
                                        "conv2d_batch_norm_takes",
                                        "conv2d_batch_norm",
                                        "conv2d_batch_norm_relu_elemt",
                                        "conv2d_batch_norm_relu_backward",
                                        "conv2d_batch_norm_layout"};

// A stub of this test only, with a CPU kernel and no CUDA one.
int twice(int x) { return 2 * x; }
WEFT_DECLARE_DISPATCH(int (*)(int), dispatch_test_twice_stub);
WEFT_DEFINE_DISPATCH(dispatch_test_twice_stub);
WEFT_REGISTER_DISPATCH(dispatch_test_twice_stub, CPU, &twice);

}  // namespace

TEST(Dispatch, StaticRegistrationRan) {
  const auto& stubs = weft::ops::dispatch_stubs();
  EXPECT_GT(stubs.size(), 1u) << "the library's stubs did not list themselves";
  std::set<std::string> names;
  for (const auto* s : stubs) EXPECT_TRUE(names.insert(s->name()).second) << s->name();
}

TEST(Dispatch, EveryOpHasACpuKernel) {
  for (const auto* s : weft::ops::dispatch_stubs())
    EXPECT_TRUE(s->has_kernel(DeviceType::CPU)) << s->name() << " has no CPU kernel";
}

TEST(Dispatch, EveryOpHasACudaKernelInCudaBuilds) {
  if (!weft::cuda::is_built()) GTEST_SKIP() << "this build has no CUDA backend";
  for (const auto* s : weft::ops::dispatch_stubs()) {
    if (s->name() == "dispatch_test_twice") continue;
    EXPECT_EQ(s->has_kernel(DeviceType::CUDA), !kCpuOnly.count(s->name()))
        << s->name()
        << (kCpuOnly.count(s->name()) ? " is CPU-only but has a CUDA kernel"
                                      : " has no CUDA kernel");
  }
}

TEST(Dispatch, CallsTheDeviceTypesKernel) {
  EXPECT_EQ(dispatch_test_twice_stub(Device::CPU(), 21), 42);
  EXPECT_EQ(dispatch_test_twice_stub(Device::CPU(3), 4), 8);  // every index of a type
}

TEST(Dispatch, MissingKernelThrowsNamingTheOp) {
  EXPECT_FALSE(dispatch_test_twice_stub.has_kernel(DeviceType::CUDA));
  const std::string msg =
      weft::test::error_message([] { dispatch_test_twice_stub(Device::CUDA(), 1); });
  EXPECT_NE(msg.find("dispatch_test_twice: no kernel for cuda tensors"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("no CUDA backend") != std::string::npos, !weft::cuda::is_built()) << msg;
}
