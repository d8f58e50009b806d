// CPU kernels of conv2d (ops/stubs/conv.h): oneDNN's convolutions where oneDNN takes the shape
// (conv_onednn.cpp; bf16 only there, float32 accumulation), else im2col + SGEMM per image and
// group (1x1 stride-1 convs skip im2col; also the reference the tests check oneDNN against).
// Backward recomputes the columns instead of keeping them: a little compute for a lot of memory.
// The backend follows conv_backend() (cpu/conv.h) at each call.
#include "ops/cpu/conv.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>

#include "weft/autograd/graph.h"
#include "weft/ops.h"

namespace weft::cpu {

ConvGeom conv_geom(const Tensor& x, const Tensor& w, const ops::ConvParams& p) {
  const int64_t C = x.dim() == 5 ? x.size(1) * x.size(4) : x.size(1);
  ConvGeom g{x.size(0), C,    x.size(2), x.size(3), w.size(0), w.size(2), w.size(3), p.sh,
             p.sw,      p.ph, p.pw,      p.dh,      p.dw,      p.groups,  0,         0};
  g.Ho = (g.H + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  g.Wo = (g.W + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  return g;
}

namespace {

// The output columns ow whose input column ow*sw + off lies inside [0, W): [lo, hi).
inline void valid_range(int64_t off, int64_t W, int64_t Wo, int64_t sw, int64_t* lo, int64_t* hi) {
  *lo = off >= 0 ? 0 : std::min(Wo, (-off + sw - 1) / sw);
  *hi = (W - 1 - off) < 0 ? 0 : std::min(Wo, (W - 1 - off) / sw + 1);
  if (*hi < *lo) *hi = *lo;
}

// col[(c*kh + i)*kw + j][oh*Wo + ow] = x[c][oh*sh - ph + i*dh][ow*sw - pw + j*dw] (0 outside).
void im2col(const float* x, const ConvGeom& g, float* col) {
  const int64_t HWo = g.Ho * g.Wo;
  for (int64_t c = 0; c < g.Cg(); ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        float* dst = col + ((c * g.kh + i) * g.kw + j) * HWo;
        const float* src = x + c * g.H * g.W;
        const int64_t off = j * g.dw - g.pw;
        int64_t lo, hi;
        valid_range(off, g.W, g.Wo, g.sw, &lo, &hi);
        for (int64_t oh = 0; oh < g.Ho; ++oh) {
          const int64_t ih = oh * g.sh - g.ph + i * g.dh;
          float* d = dst + oh * g.Wo;
          if (ih < 0 || ih >= g.H) {
            std::memset(d, 0, g.Wo * sizeof(float));
            continue;
          }
          const float* s = src + ih * g.W + off;
          for (int64_t ow = 0; ow < lo; ++ow) d[ow] = 0.0f;
          if (g.sw == 1) {
            std::memcpy(d + lo, s + lo, (hi - lo) * sizeof(float));
          } else {
            for (int64_t ow = lo; ow < hi; ++ow) d[ow] = s[ow * g.sw];
          }
          for (int64_t ow = hi; ow < g.Wo; ++ow) d[ow] = 0.0f;
        }
      }
}

// The adjoint of im2col: accumulates columns back into the image.
void col2im(const float* col, const ConvGeom& g, float* x) {
  const int64_t HWo = g.Ho * g.Wo;
  for (int64_t c = 0; c < g.Cg(); ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        const float* src = col + ((c * g.kh + i) * g.kw + j) * HWo;
        float* dst = x + c * g.H * g.W;
        const int64_t off = j * g.dw - g.pw;
        int64_t lo, hi;
        valid_range(off, g.W, g.Wo, g.sw, &lo, &hi);
        for (int64_t oh = 0; oh < g.Ho; ++oh) {
          const int64_t ih = oh * g.sh - g.ph + i * g.dh;
          if (ih < 0 || ih >= g.H) continue;
          const float* s = src + oh * g.Wo;
          float* d = dst + ih * g.W + off;
          for (int64_t ow = lo; ow < hi; ++ow) d[ow * g.sw] += s[ow];
        }
      }
}

void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              (blasint)M, (blasint)N, (blasint)K, 1.0f, A, (blasint)lda, B, (blasint)ldb, beta, C,
              (blasint)ldc);
}

void conv2d_im2col(const ConvGeom& g, const float* px, const float* pw, const float* pb,
                   float* po) {
  const int64_t HWo = g.Ho * g.Wo, HW = g.H * g.W, R = g.rows();
  Tensor col = g.pointwise() ? Tensor() : make_empty({R, HWo});
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t gi = 0; gi < g.G; ++gi) {
      const float* xin = px + (n * g.C + gi * g.Cg()) * HW;
      const float* cols = xin;
      if (!g.pointwise()) {
        im2col(xin, g, col.data_ptr<float>());
        cols = col.data_ptr<float>();
      }
      float* o = po + (n * g.K + gi * g.Kg()) * HWo;
      float beta = 0.0f;
      if (pb) {
        for (int64_t k = 0; k < g.Kg(); ++k)
          for (int64_t i = 0; i < HWo; ++i) o[k * HWo + i] = pb[gi * g.Kg() + k];
        beta = 1.0f;
      }
      sgemm(false, false, g.Kg(), HWo, R, pw + gi * g.Kg() * R, R, cols, HWo, beta, o, HWo);
    }
}

// dx (zeroed by the caller) and dw, either may be null.
void conv2d_backward_im2col(const ConvGeom& g, const float* px, const float* pw, const float* pdy,
                            float* pdx, float* pdw) {
  const int64_t HWo = g.Ho * g.Wo, HW = g.H * g.W, R = g.rows();
  if (pdw) std::memset(pdw, 0, sizeof(float) * g.K * R);
  Tensor col = make_empty({R, HWo});
  float* pc = col.data_ptr<float>();
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t gi = 0; gi < g.G; ++gi) {
      const float* d = pdy + (n * g.K + gi * g.Kg()) * HWo;
      const float* xin = px + (n * g.C + gi * g.Cg()) * HW;
      if (pdw) {
        const float* cols = xin;
        if (!g.pointwise()) {
          im2col(xin, g, pc);
          cols = pc;
        }
        // dW_g[Kg, R] += dy[Kg, HWo] @ cols[R, HWo]^T
        sgemm(false, true, g.Kg(), R, HWo, d, HWo, cols, HWo, 1.0f, pdw + gi * g.Kg() * R, R);
      }
      if (pdx) {
        float* dxin = pdx + (n * g.C + gi * g.Cg()) * HW;
        // dcols[R, HWo] = W_g[Kg, R]^T @ dy[Kg, HWo]
        if (g.pointwise()) {
          sgemm(true, false, R, HWo, g.Kg(), pw + gi * g.Kg() * R, R, d, HWo, 0.0f, dxin, HWo);
        } else {
          sgemm(true, false, R, HWo, g.Kg(), pw + gi * g.Kg() * R, R, d, HWo, 0.0f, pc, HWo);
          col2im(pc, g, dxin);
        }
      }
    }
}

// bf16 through oneDNN (g.bf16): undefined if oneDNN has no native kernel for the shape.
Tensor conv2d_onednn_bf16(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvGeom& g) {
  Tensor b = bias.defined() ? bias.to(kFloat32).contiguous() : Tensor();
  Tensor out = make_empty({g.N, g.K, g.Ho, g.Wo}, DType::BFloat16);
  if (!cpu::onednn_conv_forward(g, x.raw_data(), w.raw_data(),
                                b.defined() ? b.data_ptr<float>() : nullptr, out.raw_data()))
    return Tensor();
  return out;
}

// The weight and bias gradients come out in float32 and are rounded once to bf16, as are all
// results of the widened path; dx comes out in bf16.
ops::ConvGrads conv2d_backward_onednn_bf16(const Tensor& xs, const Tensor& ws, const Tensor& dy0,
                                           const ConvGeom& g, bool gx, bool gw, bool gb) {
  Tensor dy = dy0.to(DType::BFloat16).contiguous();
  Tensor dx = gx ? make_empty({g.N, g.C, g.H, g.W}, DType::BFloat16) : Tensor();
  Tensor dw = gw ? make_empty({g.K, g.Cg(), g.kh, g.kw}) : Tensor();
  Tensor db = gb && gw ? make_empty({g.K}) : Tensor();
  if (!cpu::onednn_conv_backward(g, xs.raw_data(), ws.raw_data(), dy.raw_data(),
                                 gx ? dx.raw_data() : nullptr, gw ? dw.data_ptr<float>() : nullptr,
                                 db.defined() ? db.data_ptr<float>() : nullptr))
    // oneDNN ran the forward, so it has the backward; if not, say so plainly.
    WEFT_ERROR("conv2d: oneDNN has no bf16 backward for input ", shape_str({g.N, g.C, g.H, g.W}),
               " and weight ", shape_str({g.K, g.Cg(), g.kh, g.kw}));
  if (gb && !gw) db = dy.to(kFloat32).sum({0, 2, 3});
  return {dx, gw ? dw.to(DType::BFloat16) : dw, gb ? db.to(DType::BFloat16) : db};
}

bool use_onednn() { return cpu::conv_backend() != cpu::ConvBackend::kIm2col; }

// float32, and bf16 where oneDNN has a native kernel; other 16-bit inputs are declined.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const ops::ConvParams& p) {
  ConvGeom g = conv_geom(x, w, p);
  if (is_reduced_float(x.dtype())) {
    if (x.dtype() != DType::BFloat16 || !use_onednn()) return Tensor();
    g.bf16 = true;
    return conv2d_onednn_bf16(x, w, bias, g);
  }
  Tensor b = bias.defined() ? bias.contiguous() : Tensor();
  Tensor out = make_empty({g.N, g.K, g.Ho, g.Wo}, kFloat32, x.device());
  const float* px = x.data_ptr<float>();
  const float* pw = w.data_ptr<float>();
  float* po = out.data_ptr<float>();
  const float* pb = b.defined() ? b.data_ptr<float>() : nullptr;
  // A forward that autograd will differentiate for the weight keeps its reordered input.
  const bool keep = GradMode::is_enabled() && w.requires_grad();
  if (!use_onednn() || !cpu::onednn_conv_forward(g, px, pw, pb, po, keep ? &x : nullptr))
    conv2d_im2col(g, px, pw, pb, po);
  return out;
}

ops::ConvGrads conv2d_backward(const Tensor& xs, const Tensor& ws, const Tensor& grad,
                               const ops::ConvParams& p, bool gx, bool gw, bool gb) {
  ConvGeom g = conv_geom(xs, ws, p);
  if (xs.dtype() == DType::BFloat16) {  // the forward ran on oneDNN
    g.bf16 = true;
    return conv2d_backward_onednn_bf16(xs, ws, grad, g, gx, gw, gb);
  }
  Tensor dy = grad.contiguous();
  Tensor dx = gx ? make_empty({g.N, g.C, g.H, g.W}) : Tensor();
  Tensor dw = gw ? make_empty({g.K, g.Cg(), g.kh, g.kw}) : Tensor();
  // oneDNN's backward-weights sums db on the way; alone, dy.sum does.
  Tensor db = gb ? make_empty({g.K}) : Tensor();
  auto ptr = [](Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; };
  if (!use_onednn() || !cpu::onednn_conv_backward(g, xs.data_ptr<float>(), ws.data_ptr<float>(),
                                                  dy.data_ptr<float>(), ptr(dx), ptr(dw),
                                                  gw ? ptr(db) : nullptr, &xs)) {
    if (gx) dx.zero_();
    conv2d_backward_im2col(g, xs.data_ptr<float>(), ws.data_ptr<float>(), dy.data_ptr<float>(),
                           ptr(dx), ptr(dw));
    if (gb) db = dy.sum({0, 2, 3});
  } else if (gb && !gw) {
    db = dy.sum({0, 2, 3});
  }
  return {dx, dw, db};
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::conv2d_stub, CPU, &conv2d);
WEFT_REGISTER_DISPATCH(ops::conv2d_backward_stub, CPU, &conv2d_backward);

}  // namespace weft::cpu
