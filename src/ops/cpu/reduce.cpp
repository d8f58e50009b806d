// CPU kernels of the reductions and softmax (ops/stubs/reduce.h). Sums accumulate in double
// (contiguous runs in vectorised float lanes first, see cpu/reduce_lanes.h), so results sit
// within float rounding of the exact value whatever the order; max and softmax run over rows
// along the dim (a contiguous copy with the dim moved last).
#include "ops/stubs/reduce.h"

#include <cmath>

#include "ops/cpu/loops.h"
#include "ops/cpu/reduce_lanes.h"
#include "weft/ops.h"

namespace weft::cpu {

namespace {

// Sum over masked dims into a keepdim-shaped float32 tensor.
Tensor sum(const Tensor& x, const std::vector<bool>& mask) {
  WEFT_CHECK(x.dtype() == kFloat32, "sum expects float32, got ", x.str());
  Shape keep = x.sizes();
  for (size_t i = 0; i < keep.size(); ++i)
    if (mask[i]) keep[i] = 1;
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

// Flat values and indices, in keep-shape order (rows_along's order with dim d removed).
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t d) {
  const int64_t n = x.size(d);
  Tensor rows = rows_along(x, d);
  int64_t m = rows.numel() / n;
  Tensor vals = make_empty({m}, kFloat32, x.device());
  Tensor idx = make_empty({m}, kInt64, x.device());
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
  return {vals, idx};
}

Tensor max_backward(const Tensor& g, const Tensor& idx, const Shape& x_shape, int64_t d,
                    const Shape& in_shape) {
  Tensor gx = zeros(in_shape);
  Tensor gc = g.contiguous();
  const float* pg = gc.data_ptr<float>();
  const int64_t* pi = idx.data_ptr<int64_t>();
  float* po = gx.data_ptr<float>();
  // Element r of the reduced output sits at (outer, inner) around dim d.
  const int64_t n = x_shape[d];
  int64_t inner = 1;
  for (size_t i = d + 1; i < x_shape.size(); ++i) inner *= x_shape[i];
  for (int64_t r = 0; r < gc.numel(); ++r) {
    int64_t outer = r / inner, in = r % inner;
    po[(outer * n + pi[r]) * inner + in] += pg[r];
  }
  return gx;
}

Tensor softmax(const Tensor& x, int64_t d, bool log) {
  const int64_t n = x.size(d);
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

}  // namespace

WEFT_REGISTER_DISPATCH(ops::sum_stub, CPU, &sum);
WEFT_REGISTER_DISPATCH(ops::max_stub, CPU, &max);
WEFT_REGISTER_DISPATCH(ops::max_backward_stub, CPU, &max_backward);
WEFT_REGISTER_DISPATCH(ops::softmax_stub, CPU, &softmax);

}  // namespace weft::cpu
