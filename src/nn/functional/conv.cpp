// conv2d: oneDNN's convolutions where oneDNN takes the shape (conv_onednn.cpp), else im2col +
// SGEMM per image and group (1x1 stride-1 convs skip im2col; also the reference the tests
// check oneDNN against). Backward recomputes the columns instead of keeping them: a little
// compute for a lot of memory. CUDA tensors go to cuDNN (src/ops/cuda/cudnn_conv.cpp).
#include "ops/cpu/conv.h"
#ifdef WEFT_WITH_CUDA
#include "ops/cuda/nn_ops.h"
#endif

#include <cblas.h>

#include <algorithm>
#include <cstring>

#include "weft/amp/autocast.h"
#include "weft/autograd.h"
#include "weft/nn/functional.h"
#include "weft/ops.h"

namespace weft::nn::functional {

namespace {

using cpu::ConvGeom;

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

void conv2d_im2col(const ConvGeom& g, const float* px, const float* pw, const float* pb, float* po);
void conv2d_backward_im2col(const ConvGeom& g, const float* px, const float* pw, const float* pdy,
                            float* pdx, float* pdw);

// bf16 through oneDNN (g.bf16): undefined if oneDNN has no native kernel for the shape. The
// weight and bias gradients come out in float32 and are rounded once to bf16, as are all
// results of the widened path; dx comes out in bf16.
Tensor conv2d_onednn_bf16(const Tensor& input, const Tensor& weight, const Tensor& bias,
                          const ConvGeom& g) {
  Tensor x = input.contiguous(), w = weight.contiguous();
  Tensor b = bias.defined() ? bias.to(kFloat32).contiguous() : Tensor();
  Tensor out = make_empty({g.N, g.K, g.Ho, g.Wo}, DType::BFloat16);
  if (!cpu::onednn_conv_forward(g, x.raw_data(), w.raw_data(),
                                b.defined() ? b.data_ptr<float>() : nullptr, out.raw_data()))
    return Tensor();
  if (autograd::any_requires_grad({&input, &weight, &bias})) {
    bool gx = input.requires_grad(), gw = weight.requires_grad(), gb = bias.requires_grad();
    Tensor xs = x.detach(), ws = w.detach();
    autograd::record(
        "ConvolutionBackward", {&input, &weight, &bias}, out,
        [g, xs, ws, gx, gw, gb](std::vector<Tensor>& grads) {
          Tensor dy = grads[0].to(DType::BFloat16).contiguous();
          Tensor dx = gx ? make_empty({g.N, g.C, g.H, g.W}, DType::BFloat16) : Tensor();
          Tensor dw = gw ? make_empty({g.K, g.Cg(), g.kh, g.kw}) : Tensor();
          Tensor db = gb && gw ? make_empty({g.K}) : Tensor();
          if (!cpu::onednn_conv_backward(g, xs.raw_data(), ws.raw_data(), dy.raw_data(),
                                         gx ? dx.raw_data() : nullptr,
                                         gw ? dw.data_ptr<float>() : nullptr,
                                         db.defined() ? db.data_ptr<float>() : nullptr))
            // oneDNN ran the forward, so it has the backward; if not, say so plainly.
            WEFT_ERROR("conv2d: oneDNN has no bf16 backward for input ",
                       shape_str({g.N, g.C, g.H, g.W}), " and weight ",
                       shape_str({g.K, g.Cg(), g.kh, g.kw}));
          if (gb && !gw) db = dy.to(kFloat32).sum({0, 2, 3});
          return std::vector<Tensor>{dx, gw ? dw.to(DType::BFloat16) : dw,
                                     gb ? db.to(DType::BFloat16) : db};
        },
        {gx ? ws : Tensor(), gw ? xs : Tensor()});
  }
  return out;
}

}  // namespace

#ifdef WEFT_WITH_CUDA
namespace {
// CUDA tensors: cuDNN's convolutions (src/ops/cuda/cudnn_conv.cpp), the same autograd node.
Tensor conv2d_cuda(const Tensor& input, const Tensor& weight, const Tensor& bias,
                   const ConvGeom& g) {
  const cuda::nn::ConvParams p{g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.G};
  Tensor x = input.contiguous(), w = weight.contiguous();
  Tensor out = cuda::nn::conv2d(x, w, bias.defined() ? bias.contiguous() : Tensor(), p);
  if (autograd::any_requires_grad({&input, &weight, &bias})) {
    bool gx = input.requires_grad(), gw = weight.requires_grad(), gb = bias.requires_grad();
    Tensor xs = x.detach(), ws = w.detach();
    autograd::record("ConvolutionBackward", {&input, &weight, &bias}, out,
                     [xs, ws, p, gx, gw, gb](std::vector<Tensor>& grads) {
                       auto r = cuda::nn::conv2d_backward(xs, ws, grads[0], p, gx, gw, gb);
                       return std::vector<Tensor>{r.dx, r.dw, r.db};
                     },
                     {gx ? ws : Tensor(), gw ? xs : Tensor()});
  }
  return out;
}
}  // namespace
#endif

Tensor conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias,
              std::array<int64_t, 2> stride, std::array<int64_t, 2> padding,
              std::array<int64_t, 2> dilation, int64_t groups) {
  if (amp::autocast_active(input)) {
    using amp::autocast_lower_precision;
    Tensor x = autocast_lower_precision(input), w = autocast_lower_precision(weight),
           b = autocast_lower_precision(bias);
    amp::AutocastSuspend inside;
    return conv2d(x, w, b, stride, padding, dilation, groups);
  }
  WEFT_CHECK(input.dim() == 4, "conv2d expects a 4-D input [N, C, H, W], got ", input.str());
  WEFT_CHECK(weight.dim() == 4, "conv2d expects a 4-D weight [K, C/groups, kh, kw], got ",
             weight.str());
  WEFT_CHECK(input.dtype() == weight.dtype() && (!bias.defined() || bias.dtype() == weight.dtype()),
             "conv2d: expected input, weight and bias of one dtype, got ", input.str(), ", ",
             weight.str(), (bias.defined() ? ", " + bias.str() : std::string()));
  WEFT_CHECK(is_floating_point(input.dtype()), "conv2d expects a float dtype, got ", input.str(),
             " and ", weight.str());
  WEFT_CHECK(input.device() == weight.device(), "conv2d: input on ", input.device(),
             " but weight on ", weight.device());
  WEFT_CHECK(groups > 0 && input.size(1) % groups == 0 && weight.size(0) % groups == 0,
             "conv2d: groups=", groups, " must divide in_channels ", input.size(1),
             " and out_channels ", weight.size(0));
  WEFT_CHECK(weight.size(1) * groups == input.size(1), "conv2d: weight ", shape_str(weight.sizes()),
             " with groups=", groups, " expects ", weight.size(1) * groups,
             " input channels, but input ", shape_str(input.sizes()), " has ", input.size(1));
  WEFT_CHECK(stride[0] > 0 && stride[1] > 0 && dilation[0] > 0 && dilation[1] > 0 &&
                 padding[0] >= 0 && padding[1] >= 0,
             "conv2d: stride and dilation must be positive and padding non-negative");
  ConvGeom g{input.size(0),
             input.size(1),
             input.size(2),
             input.size(3),
             weight.size(0),
             weight.size(2),
             weight.size(3),
             stride[0],
             stride[1],
             padding[0],
             padding[1],
             dilation[0],
             dilation[1],
             groups,
             0,
             0};
  g.Ho = (g.H + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  g.Wo = (g.W + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  WEFT_CHECK(g.Ho > 0 && g.Wo > 0, "conv2d: kernel ", shape_str({g.kh, g.kw}),
             " is larger than the padded input ", shape_str(input.sizes()));
  if (bias.defined())
    WEFT_CHECK(bias.dim() == 1 && bias.size(0) == g.K, "conv2d: bias ", bias.str(),
               " does not match ", g.K, " output channels");

#ifdef WEFT_WITH_CUDA
  if (input.device().is_cuda()) return conv2d_cuda(input, weight, bias, g);
#endif
  // 16-bit floats on the CPU: oneDNN's native bf16 convolution where it has one (float32
  // accumulation, one rounding), else the float32 convolution on widened copies, rounded once.
  if (is_reduced_float(input.dtype())) {
    if (input.dtype() == DType::BFloat16 && cpu::conv_backend() != cpu::ConvBackend::kIm2col) {
      g.bf16 = true;
      if (Tensor out = conv2d_onednn_bf16(input, weight, bias, g); out.defined()) return out;
    }
    return conv2d(input.to(kFloat32), weight.to(kFloat32),
                  bias.defined() ? bias.to(kFloat32) : bias, stride, padding, dilation, groups)
        .to(input.dtype());
  }
  Tensor x = input.contiguous(), w = weight.contiguous();
  Tensor b = bias.defined() ? bias.contiguous() : Tensor();
  Tensor out = make_empty({g.N, g.K, g.Ho, g.Wo}, kFloat32, input.device());
  const float* px = x.data_ptr<float>();
  const float* pw = w.data_ptr<float>();
  float* po = out.data_ptr<float>();
  const float* pb = b.defined() ? b.data_ptr<float>() : nullptr;
  const bool use_onednn = cpu::conv_backend() != cpu::ConvBackend::kIm2col;
  if (!use_onednn || !cpu::onednn_conv_forward(g, px, pw, pb, po)) conv2d_im2col(g, px, pw, pb, po);

  if (autograd::any_requires_grad({&input, &weight, &bias})) {
    bool gx = input.requires_grad(), gw = weight.requires_grad(), gb = bias.requires_grad();
    Tensor xs = x.detach(), ws = w.detach();
    autograd::record(
        "ConvolutionBackward", {&input, &weight, &bias}, out,
        [g, xs, ws, gx, gw, gb, use_onednn](std::vector<Tensor>& grads) {
          Tensor dy = grads[0].contiguous();
          Tensor dx = gx ? make_empty({g.N, g.C, g.H, g.W}) : Tensor();
          Tensor dw = gw ? make_empty({g.K, g.Cg(), g.kh, g.kw}) : Tensor();
          // oneDNN's backward-weights sums db on the way; alone, dy.sum does.
          Tensor db = gb ? make_empty({g.K}) : Tensor();
          auto ptr = [](Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; };
          if (!use_onednn || !cpu::onednn_conv_backward(g, xs.data_ptr<float>(),
                                                        ws.data_ptr<float>(), dy.data_ptr<float>(),
                                                        ptr(dx), ptr(dw), gw ? ptr(db) : nullptr)) {
            if (gx) dx.zero_();
            conv2d_backward_im2col(g, xs.data_ptr<float>(), ws.data_ptr<float>(),
                                   dy.data_ptr<float>(), ptr(dx), ptr(dw));
            if (gb) db = dy.sum({0, 2, 3});
          } else if (gb && !gw) {
            db = dy.sum({0, 2, 3});
          }
          return std::vector<Tensor>{dx, dw, db};
        },
        {gx ? ws : Tensor(), gw ? xs : Tensor()});
  }
  return out;
}

namespace {

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

}  // namespace

}  // namespace weft::nn::functional
