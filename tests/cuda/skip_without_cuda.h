// SKIP_WITHOUT_CUDA(): the first statement of every GPU test. Where no CUDA device can be used
// the test is reported as skipped with the reason, so that CPU-only runs stay green and say why.
#pragma once

#include <gtest/gtest.h>

#include "weft/cuda.h"

#define SKIP_WITHOUT_CUDA()                                                   \
  do {                                                                        \
    if (!::weft::cuda::is_available())                                        \
      GTEST_SKIP() << "no CUDA device: the GPU tests run on the GPU machine"; \
  } while (0)
