// cuBLAS, loaded on first use. Linking it maps libcublasLt into every process of a CUDA build,
// CPU-only ones included: ~150 MB of resident memory and ~60 ms of start-up measured here. So
// weft does not link it: these definitions of the cuBLAS entry points weft calls (the headers
// check their signatures) forward to the library, dlopen'ed the first time one is called. A
// machine without cuBLAS runs everything but GPU matrix products, which name the missing file.
#include <dlfcn.h>

// Hidden: the forwarders serve weft's own calls and never stand in for the cuBLAS of a program
// that links cuBLAS itself.
#pragma GCC visibility push(hidden)
#include <cublas_v2.h>
#pragma GCC visibility pop

#include <string>

#include "weft/error.h"

namespace {

void* cublas_symbol(const char* name) {
  static void* lib = [] {
    const std::string file = "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR);
    void* h = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    WEFT_CHECK(h, "CUDA: cannot load cuBLAS (", file, "): ", dlerror());
    return h;
  }();
  void* s = dlsym(lib, name);
  WEFT_CHECK(s, "CUDA: cuBLAS has no symbol ", name);
  return s;
}

template <typename Fn>
Fn resolve(const char* name) {
  return reinterpret_cast<Fn>(cublas_symbol(name));
}

}  // namespace

// Each function resolves its target once (thread-safe static initialisation) and calls it.
#define WEFT_CUBLAS_FORWARD(ret, name, params, args)      \
  ret name params {                                       \
    static const auto fn = resolve<ret(*) params>(#name); \
    return fn args;                                       \
  }

WEFT_CUBLAS_FORWARD(cublasStatus_t, cublasCreate_v2, (cublasHandle_t * handle), (handle))
WEFT_CUBLAS_FORWARD(cublasStatus_t, cublasSetStream_v2,
                    (cublasHandle_t handle, cudaStream_t stream), (handle, stream))
WEFT_CUBLAS_FORWARD(cublasStatus_t, cublasSetWorkspace_v2,
                    (cublasHandle_t handle, void* workspace, size_t workspaceSizeInBytes),
                    (handle, workspace, workspaceSizeInBytes))
WEFT_CUBLAS_FORWARD(cublasStatus_t, cublasSetMathMode, (cublasHandle_t handle, cublasMath_t mode),
                    (handle, mode))
WEFT_CUBLAS_FORWARD(const char*, cublasGetStatusName, (cublasStatus_t status), (status))
WEFT_CUBLAS_FORWARD(const char*, cublasGetStatusString, (cublasStatus_t status), (status))
WEFT_CUBLAS_FORWARD(cublasStatus_t, cublasSgemm_v2_64,
                    (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                     int64_t m, int64_t n, int64_t k, const float* alpha, const float* A,
                     int64_t lda, const float* B, int64_t ldb, const float* beta, float* C,
                     int64_t ldc),
                    (handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc))
WEFT_CUBLAS_FORWARD(cublasStatus_t, cublasGemmEx_64,
                    (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                     int64_t m, int64_t n, int64_t k, const void* alpha, const void* A,
                     cudaDataType Atype, int64_t lda, const void* B, cudaDataType Btype,
                     int64_t ldb, const void* beta, void* C, cudaDataType Ctype, int64_t ldc,
                     cublasComputeType_t computeType, cublasGemmAlgo_t algo),
                    (handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C,
                     Ctype, ldc, computeType, algo))
