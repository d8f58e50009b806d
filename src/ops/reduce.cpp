// Reductions (sum, mean, max/argmax) and softmax/log_softmax along a dim. Sums accumulate in
// double (contiguous runs in vectorised float lanes first, see cpu/reduce_lanes.h), so results
// sit within float rounding of the exact value whatever the order.
#include <cmath>
#include <limits>
#include <tuple>

#include "ops/cpu/loops.h"
#include "ops/cpu/parallel.h"
#include "ops/cpu/reduce_lanes.h"
#include "ops/cuda/cuda_ops.h"  // the CUDA kernels, called in builds WITH_CUDA only
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

// Sum over masked dims into a keepdim-shaped float32 tensor.
Tensor sum_kernel(const Tensor& x, const std::vector<bool>& mask) {
  WEFT_CHECK(x.dtype() == kFloat32, "sum expects float32, got ", x.str());
  Shape keep = reduced_shape(x.sizes(), mask, true);
  int64_t n_out = shape_numel(keep);
  std::vector<double> acc(n_out, 0.0);
  Shape acc_strides = contiguous_strides(keep);
  for (size_t i = 0; i < keep.size(); ++i)
    if (mask[i]) acc_strides[i] = 0;
  const float* px = static_cast<const float*>(x.impl()->storage->data);
  double* pa = acc.data();
  cpu::for_each_run<2>(x.sizes(), {&acc_strides, &x.strides()}, {0, x.storage_offset()},
                       [&](std::array<int64_t, 2> o, int64_t n, std::array<int64_t, 2> st) {
                         if (st[0] == 0 && st[1] == 1) {
                           pa[o[0]] += cpu::lane_sum(px + o[1], n);
                         } else if (st[0] == 0) {
                           double s = 0;
                           for (int64_t i = 0; i < n; ++i) s += px[o[1] + i * st[1]];
                           pa[o[0]] += s;
                         } else if (st[0] == 1 && st[1] == 1) {
                           double* __restrict a = pa + o[0];
                           const float* __restrict v = px + o[1];
                           for (int64_t i = 0; i < n; ++i) a[i] += v[i];
                         } else {
                           for (int64_t i = 0; i < n; ++i)
                             pa[o[0] + i * st[0]] += px[o[1] + i * st[1]];
                         }
                       });
  Tensor out = make_empty(keep, kFloat32, x.device());
  float* po = out.data_ptr<float>();
  for (int64_t i = 0; i < n_out; ++i) po[i] = (float)acc[i];
  return out;
}

// View `x` with dim `d` moved last, made contiguous: rows of length x.size(d).
Tensor rows_along(const Tensor& x, int64_t d) {
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < x.dim(); ++i)
    if (i != d) perm.push_back(i);
  perm.push_back(d);
  return x.detach().permute(perm).contiguous();
}

// Inverse of rows_along for a tensor of the permuted shape.
Tensor unrows(const Tensor& r, int64_t d, int64_t ndim) {
  std::vector<int64_t> inv(ndim);
  int64_t k = 0;
  for (int64_t i = 0; i < ndim; ++i)
    if (i != d) inv[i] = k++;
  inv[d] = ndim - 1;
  return r.permute(inv).contiguous();
}

}  // namespace

Tensor Tensor::sum(std::vector<int64_t> dims, bool keepdim) const {
  if (is_reduced_float(dtype())) {  // accumulated in float32; rounded once unless autocast says
    Tensor s = to(kFloat32).sum(dims, keepdim);
    return amp::autocast_to_float32_on_cuda(*this) ? s : s.to(dtype());
  }
  auto mask = reduce_mask(dims, dim());
  Tensor x = dtype() == kFloat32 ? *this : to(kFloat32);  // int64 is summed as float32
#ifdef WEFT_WITH_CUDA
  Tensor out = x.device().is_cuda() ? cuda::sum(x, mask) : sum_kernel(x, mask);
#else
  Tensor out = sum_kernel(x, mask);
#endif
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
  Tensor vals, idx;
#ifdef WEFT_WITH_CUDA
  if (x.device().is_cuda()) std::tie(vals, idx) = cuda::max(x, d);
#endif
  if (!vals.defined()) {
    Tensor rows = rows_along(x, d);
    int64_t m = rows.numel() / n;
    vals = make_empty({m}, kFloat32, device());
    idx = make_empty({m}, kInt64, device());
    const float* pr = rows.data_ptr<float>();
    float* pv = vals.data_ptr<float>();
    int64_t* pi = idx.data_ptr<int64_t>();
    for (int64_t r = 0; r < m; ++r) {
      const float* row = pr + r * n;
      int64_t best = 0;
      for (int64_t i = 1; i < n; ++i)
        if (row[i] > row[best] || (std::isnan(row[i]) && !std::isnan(row[best]))) best = i;
      pv[r] = row[best];
      pi[r] = best;
    }
  }
  // rows_along's order is keep-shape order with dim d removed: reshape directly.
  Shape out_shape = keepdim ? keep : reduced_shape(x.sizes(), reduce_mask({d}, x.dim()), false);
  vals = vals.view(out_shape);
  idx = idx.view(out_shape);
  Shape in_shape = sizes(), x_shape = x.sizes();
  Tensor saved_idx = idx;
  autograd::record("MaxBackward", {this}, vals,
                   [in_shape, x_shape, keep, d, n, saved_idx](std::vector<Tensor>& g) {
#ifdef WEFT_WITH_CUDA
                     if (g[0].device().is_cuda())
                       return std::vector<Tensor>{
                           cuda::max_backward(g[0], saved_idx, x_shape, d).view(in_shape)};
#endif
                     Tensor gx = zeros(in_shape);
                     Tensor gc = g[0].contiguous();
                     const float* pg = gc.data_ptr<float>();
                     const int64_t* pi = saved_idx.data_ptr<int64_t>();
                     float* po = gx.data_ptr<float>();
                     // Element r of the reduced output sits at (outer, inner) around dim d.
                     int64_t inner = 1;
                     for (size_t i = d + 1; i < keep.size(); ++i) inner *= keep[i];
                     for (int64_t r = 0; r < gc.numel(); ++r) {
                       int64_t outer = r / inner, in = r % inner;
                       po[(outer * n + pi[r]) * inner + in] += pg[r];
                     }
                     return std::vector<Tensor>{gx};
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
// The CPU kernel: softmax of `x` along d (of size n), in x's shape.
Tensor softmax_rows(const Tensor& x, int64_t d, int64_t n, bool log) {
  Tensor rows = rows_along(x, d);
  Tensor out = make_empty(rows.sizes(), kFloat32, x.device());
  const float* pr = rows.data_ptr<float>();
  float* po = out.data_ptr<float>();
  int64_t m = n ? rows.numel() / n : 0;
  for (int64_t r = 0; r < m; ++r) {
    const float* row = pr + r * n;
    float* o = po + r * n;
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, row[i]);
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += std::exp((double)row[i] - mx);
    if (log) {
      float lse = (float)(mx + std::log(s));
      for (int64_t i = 0; i < n; ++i) o[i] = row[i] - lse;
    } else {
      for (int64_t i = 0; i < n; ++i) o[i] = (float)(std::exp((double)row[i] - mx) / s);
    }
  }
  return unrows(out, d, x.dim());
}

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
  int64_t n = x.size(d);
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
#ifdef WEFT_WITH_CUDA
    result = x.device().is_cuda() ? cuda::softmax(x, d, log).view(self.sizes())
                                  : softmax_rows(x, d, n, log).view(self.sizes());
#else
    result = softmax_rows(x, d, n, log).view(self.sizes());
#endif
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
