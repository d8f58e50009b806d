// The CUDA kernel of GEMM (ops/stubs/linalg.h): cuBLAS for float32, bf16 and fp16 tensors. One
// cuBLAS handle per (thread, device), bound to the current stream and that stream's workspace at
// each call. float32: math mode follows weft::cuda::allow_tf32(): CUBLAS_DEFAULT_MATH (full float32
// products, PyTorch's default) or CUBLAS_TF32_TENSOR_OP_MATH. 16-bit floats: cublasGemmEx with
// float32 accumulation (CUBLAS_COMPUTE_32F) on the tensor cores. As with PyTorch's defaults
// (allow_bf16/fp16_reduced_precision_reduction), cuBLAS may reduce split-K partial sums in the
// output type, so a result may be rounded more than once.
#include <algorithm>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "cuda/allocator.h"
#include "cuda/cuda_check.h"
#include "cuda/handle_pool.h"
#include "ops/stubs/linalg.h"

namespace weft::cuda {

namespace {

cublasHandle_t handle_for(int device) {
  return detail::thread_handle<cublasHandle_t>(
      device, [](cublasHandle_t* h) { WEFT_CUBLAS_CHECK(cublasCreate(h)); });
}

// The cuBLAS workspace of (device, stream). A handle's own workspace would be shared by every
// stream the handle is set to, and cuBLAS kernels running at once on two streams (DataParallel
// replicas, DDP's side streams) must not share one (cuBLAS docs, cublasSetWorkspace). Work on one
// stream runs in order, so every thread's handle may use that stream's workspace. The size is
// cuBLAS's recommendation: 32 MiB from Hopper (sm_90) on, 4 MiB before. Taken from the caching
// allocator on that stream once, and kept for the process's life like weft's streams.
std::pair<void*, size_t> workspace_for(int device, cudaStream_t stream) {
  static std::mutex mu;
  static auto* spaces = new std::map<std::pair<int, cudaStream_t>, std::pair<void*, size_t>>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = spaces->find({device, stream});
  if (it != spaces->end()) return it->second;
  int major = 0;
  WEFT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  const size_t bytes = (major >= 9 ? size_t{32} : size_t{4}) << 20;
  void* ptr = detail::device_alloc(bytes, device);  // tied to current_stream(device) == stream
  return spaces->emplace(std::make_pair(device, stream), std::make_pair(ptr, bytes)).first->second;
}

// A 2-D operand as cuBLAS sees it: pointer, row-major leading dimension and whether the memory
// holds the transpose; copied to contiguous when neither layout fits.
struct BlasView {
  Tensor keep;
  const void* data;
  int64_t ld;
  bool trans;
};

BlasView blas_view(const Tensor& m) {
  const int64_t r = m.size(0), c = m.size(1), s0 = m.stride(0), s1 = m.stride(1);
  auto ptr = [](const Tensor& t) { return t.device_ptr(); };
  if (s1 == 1 && (r <= 1 || s0 >= std::max<int64_t>(c, 1)))
    return {m, ptr(m), std::max<int64_t>({s0, c, 1}), false};
  if (s0 == 1 && (c <= 1 || s1 >= std::max<int64_t>(r, 1)))
    return {m, ptr(m), std::max<int64_t>({s1, r, 1}), true};
  Tensor cm = m.contiguous();
  return {cm, ptr(cm), std::max<int64_t>(c, 1), false};
}

// c = op(a) @ op(b) + beta * c; a and b may be strided (transposed views are passed to cuBLAS as
// flags), c needs unit stride in dim 1. float32: TF32 only when allow_tf32(); 16-bit: float32
// accumulation.
void gemm(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& c, float beta) {
  WEFT_CHECK(a.device() == b.device() && b.device() == c.device() && c.device().is_cuda(),
             "cuda::gemm: operands on ", a.device(), ", ", b.device(), ", ", c.device());
  WEFT_CHECK(a.dtype() == b.dtype() && b.dtype() == c.dtype() &&
                 (a.dtype() == kFloat32 || is_reduced_float(a.dtype())),
             "cuda::gemm expects float32, bf16 or fp16 tensors of one dtype, got ", a.str(), ", ",
             b.str(), ", ", c.str());
  const int64_t M = c.size(0), N = c.size(1), K = ta ? a.size(0) : a.size(1);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (beta == 0) {
      Tensor z = c;
      z.zero_();
    } else if (beta != 1) {
      Tensor z = c;
      z.mul_(beta);
    }
    return;
  }
  WEFT_CHECK(c.stride(1) == 1 && (M <= 1 || c.stride(0) >= std::max<int64_t>(N, 1)),
             "cuda::gemm: the output needs unit stride in dim 1, got strides ",
             shape_str(c.strides()));
  const int64_t ldc = std::max<int64_t>({c.stride(0), N, 1});  // a 1-row output may have less
  const BlasView va = blas_view(a), vb = blas_view(b);
  const bool eff_ta = ta != va.trans, eff_tb = tb != vb.trans;
  const int dev = c.device().index;
  detail::DeviceScope scope(dev);
  cublasHandle_t h = handle_for(dev);
  const cudaStream_t stream = detail::stream_of(dev);
  const auto [ws, ws_bytes] = workspace_for(dev, stream);
  WEFT_CUBLAS_CHECK(cublasSetStream(h, stream));
  // After cublasSetStream, which resets the handle to its default workspace.
  WEFT_CUBLAS_CHECK(cublasSetWorkspace(h, ws, ws_bytes));
  // Row-major C = A' B' is column-major C^T = B'^T A'^T: B' first, sizes N x M.
  const float alpha = 1.0f;
  const cublasOperation_t op_b = eff_tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = eff_ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (c.dtype() == kFloat32) {
    WEFT_CUBLAS_CHECK(
        cublasSetMathMode(h, allow_tf32() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    WEFT_CUBLAS_CHECK(cublasSgemm_64(h, op_b, op_a, N, M, K, &alpha,
                                     static_cast<const float*>(vb.data), vb.ld,
                                     static_cast<const float*>(va.data), va.ld, &beta,
                                     static_cast<float*>(c.device_ptr()), ldc));
    return;
  }
  const cudaDataType_t type = c.dtype() == DType::BFloat16 ? CUDA_R_16BF : CUDA_R_16F;
  WEFT_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  WEFT_CUBLAS_CHECK(cublasGemmEx_64(h, op_b, op_a, N, M, K, &alpha, vb.data, type, vb.ld, va.data,
                                    type, va.ld, &beta, c.device_ptr(), type, ldc,
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

bool gemm_reduced_native(DType) { return true; }

}  // namespace

WEFT_REGISTER_DISPATCH(ops::gemm_stub, CUDA, &gemm);
WEFT_REGISTER_DISPATCH(ops::gemm_reduced_native_stub, CUDA, &gemm_reduced_native);

}  // namespace weft::cuda
