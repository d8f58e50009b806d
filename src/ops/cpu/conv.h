// Internal: conv2d's CPU backends. The CPU kernels (ops/cpu/conv.cpp) run oneDNN's
// convolutions (conv_onednn.cpp) where oneDNN takes the shape, and im2col + SGEMM otherwise,
// or when told to (set_conv_backend, or WEFT_CONV_BACKEND=im2col|onednn|winograd in the
// environment, read once). All tensors are plain contiguous NCHW / [K, C/G, kh, kw], except
// feature maps the oneDNN calls are told are channel-blocked (conv_batch_norm.cpp's).
#pragma once

#include <cstdint>

#include "ops/stubs/conv.h"
#include "weft/tensor.h"

namespace weft::cpu {

struct ConvGeom {
  int64_t N, C, H, W, K, kh, kw, sh, sw, ph, pw, dh, dw, G, Ho, Wo;
  bool bf16 = false;  // oneDNN only: x, w, y, dy and dx in bf16 (b, dw and db stay float32)
  int64_t Cg() const { return C / G; }
  int64_t Kg() const { return K / G; }
  int64_t rows() const { return Cg() * kh * kw; }  // im2col rows per group
  bool pointwise() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
};
// The geometry of conv2d(x, w) with p (shapes already checked); x NCHW, or channel-blocked
// [N, C/B, H, W, B] (Note [Conv-BatchNorm-ReLU fusion]).
ConvGeom conv_geom(const Tensor& x, const Tensor& w, const ops::ConvParams& p);

// kAuto (the default): oneDNN's Winograd F(4x4, 3x3) where it offers it (3x3, stride 1) and
// there are >= 16 channels per group in and out, else oneDNN's direct convolution where oneDNN
// takes the shape, else im2col. Winograd measured 0.63-0.86x direct's time (forward + backward)
// on every such shape tried from 14x14 to 32x32 maps; its rounding error is ~4x direct's, still
// within 1e-5 of im2col's result and 1e-4 of PyTorch's (tests). kOneDnnWinograd: the same.
// kOneDnn: direct only (PyTorch's choice). kIm2col: always im2col + SGEMM.
enum class ConvBackend { kAuto, kIm2col, kOneDnn, kOneDnnWinograd };
void set_conv_backend(ConvBackend b);
ConvBackend conv_backend();

// y = conv(x, w) + b (b may be null). False if oneDNN can't run this convolution; nothing
// has been written then. `keep` (x's tensor, or null): a backward of this shape will follow, so
// x as reordered for the primitive is kept for its backward-weights primitive, replacing what
// the previous such forward of this shape kept.
// `y_block` (8 or 16; 0 for plain): y is in oneDNN's blocked layout nChw{y_block}c, as
// onednn_conv_output_block gave it (Note [Conv-BatchNorm-ReLU fusion]); `x_block`: x is.
bool onednn_conv_forward(const ConvGeom& g, const void* x, const void* w, const float* b, void* y,
                         const Tensor* keep = nullptr, int y_block = 0, int x_block = 0);
// The block of the channel-blocked layout (nChw8c / nChw16c) the forward primitive for g writes
// its output in, when K is a multiple of it; 0 for any other layout, or no oneDNN primitive.
int onednn_conv_output_block(const ConvGeom& g, bool bias);
// Any of dx, dw may be null (not wanted); db (null or not) only with dw. Those given are
// overwritten. False as above. `src` (x's tensor, or null): the kept reordered x is used if it
// is this x at the same version. Either way the shape keeps nothing after this call.
// `dy_block`: dy in nChw{dy_block}c, as y_block above; `x_block`: x and dx are.
bool onednn_conv_backward(const ConvGeom& g, const void* x, const void* w, const void* dy, void* dx,
                          float* dw, float* db, const Tensor* src = nullptr, int dy_block = 0,
                          int x_block = 0);

}  // namespace weft::cpu
