// Tensor factories and free-function forms of the ops (torch.* names). Differentiable ops
// record themselves on the autograd tape; factories honour TensorOptions::requires_grad.
#pragma once

#include <optional>
#include <vector>

#include "weft/generator.h"
#include "weft/tensor.h"

namespace weft {

// --- factories ---
Tensor empty(const Shape& shape, TensorOptions opts = {});
Tensor zeros(const Shape& shape, TensorOptions opts = {});
Tensor ones(const Shape& shape, TensorOptions opts = {});
Tensor full(const Shape& shape, double value, TensorOptions opts = {});
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor arange(int64_t end, TensorOptions opts = {.dtype = kInt64});
Tensor arange(double start, double end, double step, TensorOptions opts = {});
Tensor tensor(const std::vector<float>& values, const Shape& shape, TensorOptions opts = {});
Tensor tensor(const std::vector<int64_t>& values, const Shape& shape);
Tensor scalar_tensor(double value, TensorOptions opts = {});
Tensor from_blob(const void* data, const Shape& shape, DType dtype);  // copies

// --- random (default generator unless one is given) ---
Tensor rand(const Shape& shape, Generator* gen = nullptr);   // U[0,1)
Tensor randn(const Shape& shape, Generator* gen = nullptr);  // N(0,1)
Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator* gen = nullptr);
Tensor randperm(int64_t n, Generator* gen = nullptr);
Tensor& uniform_(Tensor& t, double low, double high, Generator* gen = nullptr);
Tensor& normal_(Tensor& t, double mean, double std, Generator* gen = nullptr);

// --- elementwise and reductions ---
Tensor add(const Tensor& a, const Tensor& b, double alpha = 1.0);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor matmul(const Tensor& a, const Tensor& b);
// a @ b with optional transposes, without materialising them; the GEMM core of Linear.
Tensor mm(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim = 0);
Tensor stack(const std::vector<Tensor>& tensors, int64_t dim = 0);
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);
// Largest |a-b| / (atol + rtol*|b|) ratio; <= 1 means allclose. For test messages.
double max_rel_diff(const Tensor& a, const Tensor& b, double rtol, double atol);
Tensor sum_to(const Tensor& t, const Shape& shape);  // undo broadcasting (for gradients)
// PyTorch's type promotion: float32 over the 16-bit floats, bf16 with fp16 gives float32, floats
// over int64; a 0-dim operand decides only when of a higher category than the other.
DType promote_types(DType a, DType b);
DType result_type(const Tensor& a, const Tensor& b);
Shape broadcast_shapes(const Shape& a, const Shape& b);

// --- intra-op threads ---
void set_num_threads(int n);  // this thread's kernels and BLAS
int get_num_threads();

}  // namespace weft
