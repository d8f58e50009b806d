// Reductions (sum, mean, max/argmax) and softmax/log_softmax along a dim, with their backward.
// Sums accumulate in double, so results sit within float rounding of the exact value whatever
// the order. The kernels are the device's (ops/stubs/reduce.h; Note [Device dispatch]).
#include "ops/stubs/reduce.h"

#include <cmath>
#include <limits>

#include "weft/amp/autocast.h"
#include "weft/autograd/graph.h"
#include "weft/ops.h"

namespace weft {

namespace {

std::vector<bool> reduce_mask(const std::vector<int64_t>& dims, int64_t ndim) {
  std::vector<bool> mask(std::max<int64_t>(ndim, 1), false);
  for (int64_t d : dims) {
    int64_t w = wrap_dim(d, ndim);
    WEFT_CHECK(!mask[w], "dim ", w, " appears multiple times in the list of dims");
    mask[w] = true;
  }
  return mask;
}

Shape reduced_shape(const Shape& s, const std::vector<bool>& mask, bool keepdim) {
  Shape out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (!mask[i])
      out.push_back(s[i]);
    else if (keepdim)
      out.push_back(1);
  }
  return out;
}

}  // namespace

Tensor Tensor::sum(std::vector<int64_t> dims, bool keepdim) const {
  if (is_reduced_float(dtype())) {  // accumulated in float32; rounded once unless autocast says
    Tensor s = to(kFloat32).sum(dims, keepdim);
    return amp::autocast_to_float32_on_cuda(*this) ? s : s.to(dtype());
  }
  auto mask = reduce_mask(dims, dim());
  Tensor x = dtype() == kFloat32 ? *this : to(kFloat32);  // int64 is summed as float32
  Tensor out = ops::sum_stub(x.device(), x, mask);
  Shape out_shape = reduced_shape(sizes(), mask, keepdim);
  if (dim() == 0) out_shape = {};
  out = out.view(out_shape);
  Shape in_shape = sizes(), keep = reduced_shape(sizes(), mask, true);
  autograd::record("SumBackward", {this}, out, [in_shape, keep](std::vector<Tensor>& g) {
    return std::vector<Tensor>{g[0].reshape(keep).expand(in_shape).contiguous()};
  });
  return out;
}

Tensor Tensor::sum() const {
  std::vector<int64_t> all;
  for (int64_t i = 0; i < dim(); ++i) all.push_back(i);
  return sum(all, false);
}

Tensor Tensor::mean(std::vector<int64_t> dims, bool keepdim) const {
  amp::AutocastSuspend inside;  // mean is on no autocast list, so neither is its sum
  auto mask = reduce_mask(dims, dim());
  int64_t count = 1;
  for (int64_t i = 0; i < dim(); ++i)
    if (mask[i]) count *= size(i);
  return sum(dims, keepdim) / (double)std::max<int64_t>(count, 1);
}

// 16-bit floats: the rounded sum, divided and rounded again, as PyTorch's CPU mean.
Tensor Tensor::mean() const {
  amp::AutocastSuspend inside;
  return sum() / (double)std::max<int64_t>(numel(), 1);
}

std::pair<Tensor, Tensor> Tensor::max(int64_t d, bool keepdim) const {
  if (is_reduced_float(dtype())) {  // exact: the maximum of widened values is one of them
    auto [v, i] = to(kFloat32).max(d, keepdim);
    return {v.to(dtype()), i};
  }
  WEFT_CHECK(dtype() == kFloat32, "max expects float32, got ", str());
  d = wrap_dim(d, dim());
  Tensor x = dim() == 0 ? reshape({1}) : *this;
  int64_t n = x.size(d);
  WEFT_CHECK(n > 0, "max over an empty dim ", d, " of ", str());
  Shape keep = x.sizes();
  keep[d] = 1;
  auto [vals, idx] = ops::max_stub(x.device(), x, d);
  // The kernels' order is keep-shape order with dim d removed: reshape directly.
  Shape out_shape = keepdim ? keep : reduced_shape(x.sizes(), reduce_mask({d}, x.dim()), false);
  vals = vals.view(out_shape);
  idx = idx.view(out_shape);
  Shape in_shape = sizes(), x_shape = x.sizes();
  Tensor saved_idx = idx;
  autograd::record("MaxBackward", {this}, vals,
                   [in_shape, x_shape, d, saved_idx](std::vector<Tensor>& g) {
                     return std::vector<Tensor>{ops::max_backward_stub(
                         g[0].device(), g[0], saved_idx, x_shape, d, in_shape)};
                   },
                   {saved_idx});
  return {vals, idx};
}

Tensor Tensor::max() const { return reshape({-1}).max(0).first; }

Tensor Tensor::argmax(int64_t d, bool keepdim) const {
  NoGradGuard ng;
  return max(d, keepdim).second;
}

namespace {
// g and y float32. For a 16-bit `dtype` the sum over the dim is rounded to it and the rest is
// float, as PyTorch's CPU kernels compute (checked against them bit for bit).
Tensor softmax_grad(const Tensor& g, const Tensor& y, int64_t d, bool log, DType dtype) {
  Tensor s = log ? g.sum({d}, true) : (g * y).sum({d}, true);
  if (dtype != kFloat32) s = s.to(dtype).to(kFloat32);
  return log ? g - y.exp() * s : y * (g - s);
}

// 16-bit inputs: computed in float32 and rounded once; the backward reads the rounded output,
// as PyTorch saves it, and rounds its result once. Under CUDA autocast (float32 list) the
// output stays float32.
Tensor softmax_impl(const Tensor& self, int64_t d, bool log) {
  const bool reduced = is_reduced_float(self.dtype());
  if (reduced && amp::autocast_to_float32_on_cuda(self))
    return softmax_impl(self.to(kFloat32), d, log);
  WEFT_CHECK(self.dtype() == kFloat32 || reduced, "softmax expects a floating point tensor, got ",
             self.str());
  d = wrap_dim(d, self.dim());
  Tensor x = self.dim() == 0 ? self.reshape({1}) : self;
  if (reduced) x = x.detach().to(kFloat32);
  Tensor result;
  if (reduced && log) {
    // PyTorch's CPU kernel rounds the sum of exponentials and its log to the 16-bit type:
    // x - max - r(log(r(sum))), matched bit for bit (a float log-sum-exp differs by an ulp
    // in a sixth of the outputs, and the backward reads these outputs).
    NoGradGuard ng;
    auto r = [&](const Tensor& t) { return t.to(self.dtype()).to(kFloat32); };
    Tensor shifted = x - x.max(d, true).first;
    Tensor lse = r(r(shifted.exp().sum({d}, true)).log());
    result = (shifted - lse).view(self.sizes());
  } else {
    result = ops::softmax_stub(x.device(), x, d, log).view(self.sizes());
  }
  if (reduced) result = result.to(self.dtype());
  Tensor y = result.detach();
  autograd::record(log ? "LogSoftmaxBackward" : "SoftmaxBackward", {&self}, result,
                   [y, d, log, reduced](std::vector<Tensor>& g) {
                     if (!reduced)
                       return std::vector<Tensor>{softmax_grad(g[0], y, d, log, kFloat32)};
                     Tensor gx = softmax_grad(g[0].to(kFloat32), y.to(kFloat32), d, log, y.dtype());
                     return std::vector<Tensor>{gx.to(y.dtype())};
                   },
                   {y});
  return result;
}
}  // namespace

Tensor Tensor::softmax(int64_t d) const { return softmax_impl(*this, d, false); }
Tensor Tensor::log_softmax(int64_t d) const { return softmax_impl(*this, d, true); }

}  // namespace weft
