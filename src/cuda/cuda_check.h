// Internal to the CUDA backend: WEFT_CUDA_CHECK / WEFT_CUBLAS_CHECK, which turn a failed CUDA
// runtime or cuBLAS call into a weft::Error naming the call and CUDA's own message, and
// DeviceScope, which makes a device current for a scope (switching only when it differs).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "weft/cuda.h"
#include "weft/error.h"

namespace weft::cuda::detail {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t st, const char* call, const char* file,
                                     int line);

// Devices that weft has made current (and so given a primary context) on any thread.
void mark_entered(int device);
bool entered(int device);

// Sets the calling thread's CUDA device to `device` for the scope, then restores the previous
// one if that device has a context from weft (see runtime.cpp).
class DeviceScope {
 public:
  explicit DeviceScope(int device);
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int prev_ = -1;
};

// The current stream of `device` as a cudaStream_t (kernels launch there).
inline cudaStream_t stream_of(int device) { return current_stream(device).handle(); }

}  // namespace weft::cuda::detail

#define WEFT_CUDA_CHECK(call)                                                            \
  do {                                                                                   \
    const cudaError_t weft_cuda_err_ = (call);                                           \
    if (weft_cuda_err_ != cudaSuccess) [[unlikely]]                                      \
      ::weft::cuda::detail::throw_cuda_error(weft_cuda_err_, #call, __FILE__, __LINE__); \
  } while (0)

#define WEFT_CUBLAS_CHECK(call)                                                             \
  do {                                                                                      \
    const cublasStatus_t weft_cublas_st_ = (call);                                          \
    if (weft_cublas_st_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                              \
      ::weft::cuda::detail::throw_cublas_error(weft_cublas_st_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: reports a bad launch configuration at the launch site.
#define WEFT_CUDA_CHECK_LAUNCH() WEFT_CUDA_CHECK(cudaGetLastError())
