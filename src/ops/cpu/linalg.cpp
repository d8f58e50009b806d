// CPU kernels of the matrix products (ops/stubs/linalg.h): OpenBLAS SGEMM (skinny products on
// weft's own kernels, cpu/skinny_gemm.h), bf16 on oneDNN's (cpu/bf16_gemm.h). Transposed operands
// are passed to BLAS as flags, never copied. fp16 has no kernel here: the ops widen it.
#include "ops/stubs/linalg.h"

#include <cblas.h>

#include "ops/cpu/bf16_gemm.h"
#include "ops/cpu/skinny_gemm.h"
#include "weft/ops.h"

namespace weft::cpu {

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
void gemm(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& c, float beta) {
  BlasView va = blas_view(a), vb = blas_view(b);
  const int64_t M = c.size(0), N = c.size(1), K = ta ? a.size(0) : a.size(1);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (beta == 0) Tensor(c).zero_();
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
    Tensor(c).copy_(cf);
    return;
  }
  if (cpu::skinny_sgemm(eff_ta, eff_tb, M, N, K, va.f32(), va.ld, vb.f32(), vb.ld, beta,
                        c.data_ptr<float>(), N))
    return;
  cblas_sgemm(CblasRowMajor, eff_ta ? CblasTrans : CblasNoTrans, eff_tb ? CblasTrans : CblasNoTrans,
              (blasint)M, (blasint)N, (blasint)K, 1.0f, va.f32(), (blasint)va.ld, vb.f32(),
              (blasint)vb.ld, beta, c.data_ptr<float>(), (blasint)std::max<int64_t>(N, 1));
}

bool gemm_reduced_native(DType dtype) { return dtype == DType::BFloat16; }

// The bias initialises the output and one SGEMM accumulates x W^T into it; bf16 on oneDNN where
// it has a native kernel (undefined otherwise, or for an empty product).
Tensor addmm(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t M = x.size(0), N = w.size(0), K = w.size(1);
  Tensor b = bias.contiguous();
  Tensor out = make_empty({M, N}, x.dtype(), x.device());
  if (x.dtype() == DType::BFloat16) {
    Tensor bf = b.to(kFloat32);
    if (!cpu::bf16_gemm(false, true, M, N, K, static_cast<const uint16_t*>(x.raw_data()), K,
                        static_cast<const uint16_t*>(w.raw_data()), K,
                        static_cast<uint16_t*>(out.raw_data()), N, bf.data_ptr<float>()))
      return Tensor();
    return out;
  }
  if (x.dtype() != kFloat32) return Tensor();
  float* po = out.data_ptr<float>();
  const float* pb = b.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) po[m * N + n] = pb[n];
  if (M > 0 && N > 0 && K > 0 &&
      !cpu::skinny_sgemm(false, true, M, N, K, x.data_ptr<float>(), K, w.data_ptr<float>(), K, 1.0f,
                         po, N))
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)M, (blasint)N, (blasint)K, 1.0f,
                x.data_ptr<float>(), (blasint)K, w.data_ptr<float>(), (blasint)K, 1.0f, po,
                (blasint)N);
  return out;
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::gemm_stub, CPU, &gemm);
WEFT_REGISTER_DISPATCH(ops::gemm_reduced_native_stub, CPU, &gemm_reduced_native);
WEFT_REGISTER_DISPATCH(ops::addmm_stub, CPU, &addmm);

}  // namespace weft::cpu
