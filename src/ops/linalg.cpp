// Matrix products on OpenBLAS SGEMM (skinny products on weft's own kernels, cpu/skinny_gemm.h),
// bf16 ones on oneDNN's (cpu/bf16_gemm.h). Transposed operands are passed to BLAS as flags, never
// copied; batched and broadcast matmul loop GEMM over the batch.
#include <cblas.h>

#include "ops/cpu/bf16_gemm.h"
#include "ops/cpu/skinny_gemm.h"
#ifdef WEFT_WITH_CUDA
#include "ops/cuda/cuda_ops.h"
#endif
#include "weft/amp/autocast.h"
#include "weft/autograd/graph.h"
#include "weft/ops.h"

namespace weft {

namespace {

// A 2-D tensor as BLAS sees it: data, leading dimension, and whether it is transposed.
struct BlasView {
  Tensor t;  // keeps storage alive
  const void* data;
  int64_t ld;
  bool trans;
  const float* f32() const { return static_cast<const float*>(data); }
  const uint16_t* bits16() const { return static_cast<const uint16_t*>(data); }
};

BlasView blas_view(const Tensor& m) {
  const int64_t r = m.size(0), c = m.size(1);
  const int64_t s0 = m.stride(0), s1 = m.stride(1);
  if (s1 == 1 && (r <= 1 || s0 >= std::max<int64_t>(c, 1)))
    return {m, m.raw_data(), std::max<int64_t>({s0, c, 1}), false};
  if (s0 == 1 && (c <= 1 || s1 >= std::max<int64_t>(r, 1)))
    return {m, m.raw_data(), std::max<int64_t>({s1, r, 1}), true};
  Tensor cm = m.contiguous();
  return {cm, cm.raw_data(), std::max<int64_t>(c, 1), false};
}

// C[M,N] (+)= op(A) @ op(B), raw, no autograd.
void gemm(const Tensor& a, bool ta, const Tensor& b, bool tb, Tensor& c, float beta) {
#ifdef WEFT_WITH_CUDA
  if (c.device().is_cuda()) {  // cuBLAS (src/ops/cuda/blas.cpp)
    cuda::gemm(a, ta, b, tb, c, beta);
    return;
  }
#endif
  BlasView va = blas_view(a), vb = blas_view(b);
  const int64_t M = c.size(0), N = c.size(1), K = ta ? a.size(0) : a.size(1);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (beta == 0) c.zero_();
    return;
  }
  const bool eff_ta = ta != va.trans, eff_tb = tb != vb.trans;
  if (c.dtype() == DType::BFloat16) {
    WEFT_CHECK(beta == 0.0f, "bf16 gemm accumulating into its output is not supported");
    if (cpu::bf16_gemm(eff_ta, eff_tb, M, N, K, va.bits16(), va.ld, vb.bits16(), vb.ld,
                       static_cast<uint16_t*>(c.raw_data()), N))
      return;
    // No native bf16 kernel here: the float32 product of widened copies, rounded once.
    Tensor cf = make_empty({M, N});
    gemm(a.to(kFloat32), ta, b.to(kFloat32), tb, cf, 0.0f);
    c.copy_(cf);
    return;
  }
  if (cpu::skinny_sgemm(eff_ta, eff_tb, M, N, K, va.f32(), va.ld, vb.f32(), vb.ld, beta,
                        c.data_ptr<float>(), N))
    return;
  cblas_sgemm(CblasRowMajor, eff_ta ? CblasTrans : CblasNoTrans, eff_tb ? CblasTrans : CblasNoTrans,
              (blasint)M, (blasint)N, (blasint)K, 1.0f, va.f32(), (blasint)va.ld, vb.f32(),
              (blasint)vb.ld, beta, c.data_ptr<float>(), (blasint)std::max<int64_t>(N, 1));
}

void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  WEFT_CHECK(a.dtype() == b.dtype(), op, ": expected both tensors to have the same dtype, got ",
             a.str(), " and ", b.str());
}

}  // namespace

Tensor mm(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  if (amp::autocast_active(a)) {
    Tensor la = amp::autocast_lower_precision(a), lb = amp::autocast_lower_precision(b);
    amp::AutocastSuspend inside;
    return mm(la, lb, trans_a, trans_b);
  }
  check_same_dtype(a, b, "mm");
  // 16-bit floats: float32 accumulation (as PyTorch's), the product rounded once. cuBLAS and
  // (bf16 on the CPU) gemm take them as they are; fp16 on the CPU goes through float32 copies.
  if (a.dtype() == DType::Float16 && a.device().is_cpu())
    return mm(a.to(kFloat32), b.to(kFloat32), trans_a, trans_b).to(a.dtype());
  WEFT_CHECK(is_floating_point(a.dtype()), "mm expects float tensors, got ", a.str());
  WEFT_CHECK(a.device() == b.device(), "mm: tensors on different devices, ", a.device(), " and ",
             b.device());
  WEFT_CHECK(a.dim() == 2 && b.dim() == 2, "mm expects 2-D tensors, got ", a.str(), " and ",
             b.str());
  const int64_t M = trans_a ? a.size(1) : a.size(0), K = trans_a ? a.size(0) : a.size(1);
  const int64_t K2 = trans_b ? b.size(1) : b.size(0), N = trans_b ? b.size(0) : b.size(1);
  WEFT_CHECK(K == K2, "mm: shapes ", shape_str(a.sizes()), (trans_a ? "^T" : ""), " and ",
             shape_str(b.sizes()), (trans_b ? "^T" : ""), " cannot be multiplied (", K, " vs ", K2,
             ")");
  Tensor out = make_empty({M, N}, a.dtype(), a.device());
  gemm(a, trans_a, b, trans_b, out, 0.0f);
  if (autograd::any_requires_grad({&a, &b})) {
    Tensor sa = a.detach(), sb = b.detach();
    bool ga = a.requires_grad(), gb = b.requires_grad();
    autograd::record("MmBackward", {&a, &b}, out,
                     [sa, sb, ga, gb, trans_a, trans_b](std::vector<Tensor>& g) {
                       Tensor da, db;
                       // out = A' B' with A' = op(a), B' = op(b): dA' = g B'^T, dB' = A'^T g.
                       if (ga)
                         da = trans_a ? mm(sb, g[0], trans_b, true) : mm(g[0], sb, false, !trans_b);
                       if (gb)
                         db = trans_b ? mm(g[0], sa, true, trans_a) : mm(sa, g[0], !trans_a, false);
                       return std::vector<Tensor>{da, db};
                     },
                     {ga ? sb : Tensor(), gb ? sa : Tensor()});
  }
  return out;
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  if (amp::autocast_active(a)) {
    Tensor la = amp::autocast_lower_precision(a), lb = amp::autocast_lower_precision(b);
    amp::AutocastSuspend inside;
    return matmul(la, lb);
  }
  check_same_dtype(a, b, "matmul");
  if (a.dtype() == DType::Float16 && a.device().is_cpu())  // as mm: float32, rounded once
    return matmul(a.to(kFloat32), b.to(kFloat32)).to(a.dtype());
  WEFT_CHECK(is_floating_point(a.dtype()), "matmul expects float tensors, got ", a.str());
  WEFT_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: both arguments need at least 1 dim, got ",
             a.str(), " and ", b.str());
  if (a.dim() == 1 && b.dim() == 1) return (a * b).sum();
  if (a.dim() == 1) return matmul(a.unsqueeze(0), b).squeeze(-2);
  if (b.dim() == 1) return matmul(a, b.unsqueeze(-1)).squeeze(-1);
  if (a.dim() == 2 && b.dim() == 2) return mm(a, b);
  WEFT_CHECK(a.size(-1) == b.size(-2), "matmul: shapes ", shape_str(a.sizes()), " and ",
             shape_str(b.sizes()), " cannot be multiplied (", a.size(-1), " vs ", b.size(-2), ")");
  // [..., n, k] @ [k, m]: fold the batch into rows.
  if (b.dim() == 2) {
    Shape out_shape = a.sizes();
    out_shape.back() = b.size(1);
    return mm(a.reshape({-1, a.size(-1)}), b).view(out_shape);
  }
  Shape ba(a.sizes().begin(), a.sizes().end() - 2), bb(b.sizes().begin(), b.sizes().end() - 2);
  Shape batch = broadcast_shapes(ba, bb);
  Shape ea = batch, eb = batch;
  ea.insert(ea.end(), {a.size(-2), a.size(-1)});
  eb.insert(eb.end(), {b.size(-2), b.size(-1)});
  const int64_t nb = shape_numel(batch), n = a.size(-2), k = a.size(-1), m = b.size(-1);
  Tensor a3 = a.expand(ea).reshape({nb, n, k}), b3 = b.expand(eb).reshape({nb, k, m});
  Tensor out = make_empty({nb, n, m}, a.dtype(), a.device());
  {
    NoGradGuard ng;
    for (int64_t i = 0; i < nb; ++i) {
      Tensor o = out.select(0, i);
      gemm(a3.select(0, i), false, b3.select(0, i), false, o, 0.0f);
    }
  }
  if (autograd::any_requires_grad({&a3, &b3})) {
    Tensor sa = a3.detach(), sb = b3.detach();
    autograd::record("BmmBackward", {&a3, &b3}, out,
                     [sa, sb](std::vector<Tensor>& g) {
                       return std::vector<Tensor>{matmul(g[0], sb.transpose(1, 2)),
                                                  matmul(sa.transpose(1, 2), g[0])};
                     },
                     {sa, sb});
  }
  Shape out_shape = batch;
  out_shape.insert(out_shape.end(), {n, m});
  return out.view(out_shape);
}

Tensor Tensor::matmul(const Tensor& other) const { return weft::matmul(*this, other); }

}  // namespace weft
