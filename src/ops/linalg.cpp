// Matrix products: mm, and matmul's batched and broadcast forms looping GEMM over the batch.
// The GEMM kernels are the device's (ops/stubs/linalg.h; Note [Device dispatch]); 16-bit
// operands they do not take run on float32 copies, rounded once.
#include "ops/stubs/linalg.h"

#include "weft/amp/autocast.h"
#include "weft/autograd/graph.h"
#include "weft/ops.h"

namespace weft {

namespace {

// C[M,N] (+)= op(A) @ op(B), raw, no autograd.
void gemm(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& c, float beta) {
  ops::gemm_stub(c.device(), a, ta, b, tb, c, beta);
}

// 16-bit operands that the device's GEMM does not take as they are.
bool widen_for_gemm(const Tensor& a) {
  return is_reduced_float(a.dtype()) && !ops::gemm_reduced_native_stub(a.device(), a.dtype());
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
  if (widen_for_gemm(a)) return mm(a.to(kFloat32), b.to(kFloat32), trans_a, trans_b).to(a.dtype());
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
  if (widen_for_gemm(a))  // as mm: float32, rounded once
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
