// The kernels of the matrix products: GEMM (mm, matmul, linear without a fused kernel) and
// linear's fused addmm (Note [Device dispatch] in docs/ARCHITECTURE.md). Guarantees: float32
// results as PyTorch's default math; 16-bit products accumulate in float32 and round once.
#pragma once

#include "ops/dispatch.h"
#include "weft/tensor.h"

namespace weft::ops {

// c = op(a) @ op(b) + beta * c for 2-D tensors of one float dtype on one device (op: transposed
// where ta / tb); a and b may be strided, c is contiguous in dim 1.
using GemmFn = void (*)(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& c,
                        float beta);
WEFT_DECLARE_DISPATCH(GemmFn, gemm_stub);
// Capability: whether gemm_stub takes operands of the 16-bit `dtype` as they are. Where not, mm
// and linear run on float32 copies whose casts carry the gradients.
using GemmReducedNativeFn = bool (*)(DType dtype);
WEFT_DECLARE_DISPATCH(GemmReducedNativeFn, gemm_reduced_native_stub);

// linear's fused kernel (PyTorch's addmm): bias [N] + x [M, K] @ w [N, K]^T for contiguous x
// and w of one dtype, as [M, N]; undefined where the device has no kernel for the dtype or shape
// (the op then runs on float32 copies). Devices without a kernel here (has_kernel) run linear as
// mm plus the broadcast bias.
using AddmmFn = Tensor (*)(const Tensor& x, const Tensor& w, const Tensor& bias);
WEFT_DECLARE_DISPATCH(AddmmFn, addmm_stub);

}  // namespace weft::ops
