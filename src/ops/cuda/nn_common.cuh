// Internal to the CUDA kernels of the nn ops (batch_norm.cu, pooling.cu, loss.cu): their
// argument check and zero-filled outputs ordered on the device's current stream.
#pragma once

#include <cuda_runtime.h>

#include "cuda/cuda_check.h"
#include "ops/cuda/loops.cuh"
#include "weft/tensor.h"

namespace weft::cuda::detail {

inline void check_on(const Tensor& t, const Tensor& like, const char* what) {
  WEFT_CHECK(t.device() == like.device() && t.dtype() == kFloat32 && t.is_contiguous(), "CUDA ",
             what, ": expected a contiguous float32 tensor on ", like.device(), ", got ", t.str(),
             " on ", t.device());
}

inline Tensor zeros_on(const Shape& shape, DType dtype, Device d) {
  Tensor t = make_empty(shape, dtype, d);
  // On d: a memset on the null stream would otherwise go to the current device's null stream,
  // unordered with the kernels that follow on d's (backward may run with another device current).
  DeviceScope scope(d.index);
  if (t.nbytes() > 0)
    WEFT_CUDA_CHECK(cudaMemsetAsync(t.impl()->storage->data, 0, t.nbytes(), stream_of(d.index)));
  return t;
}

}  // namespace weft::cuda::detail
