// What every GPU test shares. SKIP_WITHOUT_CUDA() is the first statement of each: where no CUDA
// device can be used the test is reported as skipped with the reason, so that CPU-only runs
// stay green and say why. kGpu is the device the tests run on, host() a tensor's CPU copy.
#pragma once

#include <gtest/gtest.h>

#include "weft/cuda.h"
#include "weft/tensor.h"

#define SKIP_WITHOUT_CUDA()                                                   \
  do {                                                                        \
    if (!::weft::cuda::is_available())                                        \
      GTEST_SKIP() << "no CUDA device: the GPU tests run on the GPU machine"; \
  } while (0)

namespace weft::test {

inline const Device kGpu = Device::CUDA(0);
inline Tensor host(const Tensor& t) { return t.detach().to(Device::CPU()); }

}  // namespace weft::test
