// Shape ops (ATen's TensorShape): the Tensor's view methods (view, reshape, permute, slice,
// expand, split, ...), each recorded for autograd, and joining tensors with cat and stack
// (backward slices the gradient apart). Views share their base's storage.
#include <functional>
#include <optional>

#include "ops/view_result.h"
#include "weft/autograd/graph.h"
#include "weft/ops.h"

namespace weft {

using detail::view_result;

namespace {

// Strides for viewing `t` as `shape` without a copy, if possible (PyTorch's computeStride).
std::optional<Shape> view_strides(const Shape& old_sz, const Shape& old_st, const Shape& shape) {
  Shape st(shape.size());
  if (shape_numel(old_sz) <= 1) return contiguous_strides(shape);
  int64_t view_d = (int64_t)shape.size() - 1;
  int64_t chunk_base = old_st.empty() ? 1 : old_st.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t td = (int64_t)old_sz.size() - 1; td >= 0; --td) {
    tensor_numel *= old_sz[td];
    if (td == 0 || (old_sz[td - 1] != 1 && old_st[td - 1] != tensor_numel * chunk_base)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        st[view_d] = view_numel * chunk_base;
        view_numel *= shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (td > 0) {
        chunk_base = old_st[td - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return st;
}

Shape infer_shape(Shape shape, int64_t numel, const Shape& from) {
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      WEFT_CHECK(infer < 0, "only one dimension can be -1 in view shape ", shape_str(shape));
      infer = (int64_t)i;
    } else {
      WEFT_CHECK(shape[i] >= 0, "invalid view shape ", shape_str(shape));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    WEFT_CHECK(known != 0 && numel % known == 0, "shape ", shape_str(shape),
               " is invalid for input of shape ", shape_str(from));
    shape[infer] = numel / known;
  }
  WEFT_CHECK(shape_numel(shape) == numel, "shape ", shape_str(shape),
             " is invalid for input of shape ", shape_str(from), " (", numel, " elements)");
  return shape;
}

}  // namespace

Tensor Tensor::view(Shape shape) const {
  shape = infer_shape(std::move(shape), numel(), sizes());
  auto st = view_strides(sizes(), strides(), shape);
  WEFT_CHECK(st.has_value(), "view ", shape_str(shape), " is not compatible with the strides of ",
             str(), "; use reshape()");
  Shape in_shape = sizes();
  return view_result(*this, make_view(*this, shape, *st, storage_offset()), "ViewBackward",
                     [in_shape](const Tensor& g) { return g.reshape(in_shape); });
}

Tensor Tensor::reshape(Shape shape) const {
  shape = infer_shape(std::move(shape), numel(), sizes());
  if (view_strides(sizes(), strides(), shape)) return view(shape);
  return contiguous().view(shape);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  WEFT_CHECK((int64_t)dims.size() == dim(), "permute: ", dims.size(), " dims given for ", str());
  Shape sz(dims.size()), st(dims.size());
  std::vector<int64_t> inverse(dims.size(), -1);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], dim());
    WEFT_CHECK(inverse[d] < 0, "permute: repeated dim ", d);
    inverse[d] = (int64_t)i;
    sz[i] = sizes()[d];
    st[i] = strides()[d];
  }
  return view_result(*this, make_view(*this, sz, st, storage_offset()), "PermuteBackward",
                     [inverse](const Tensor& g) { return g.permute(inverse); });
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  std::vector<int64_t> p(dim());
  for (int64_t i = 0; i < dim(); ++i) p[i] = i;
  if (dim() == 0) return *this;
  std::swap(p[wrap_dim(d0, dim())], p[wrap_dim(d1, dim())]);
  return permute(p);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim());
  WEFT_CHECK(dim() > 0, "slice on a 0-d tensor");
  WEFT_CHECK(step > 0, "slice step must be positive, got ", step);
  int64_t n = sizes()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape sz = sizes(), st = strides();
  sz[d] = (end - start + step - 1) / step;
  st[d] *= step;
  Shape in_shape = sizes();
  return view_result(*this, make_view(*this, sz, st, storage_offset() + start * strides()[d]),
                     "SliceBackward", [in_shape, d, start, end, step](const Tensor& g) {
                       Tensor r = zeros(in_shape, {.dtype = g.dtype(), .device = g.device()});
                       NoGradGuard ng;
                       r.slice(d, start, end, step).copy_(g);
                       return r;
                     });
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim());
  WEFT_CHECK(start >= 0 && length >= 0 && start + length <= sizes()[d], "narrow: [", start, ", ",
             start + length, ") out of range for dim ", d, " of ", str());
  return slice(d, start, start + length);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim());
  WEFT_CHECK(dim() > 0, "select on a 0-d tensor");
  int64_t n = sizes()[d];
  WEFT_CHECK(index >= -n && index < n, "index ", index, " out of range for dim ", d, " of ", str());
  if (index < 0) index += n;
  return slice(d, index, index + 1).squeeze(d);
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1);
  Shape sz = sizes(), st = strides();
  int64_t s = d < dim() ? sz[d] * st[d] : 1;
  sz.insert(sz.begin() + d, 1);
  st.insert(st.begin() + d, s);
  return view_result(*this, make_view(*this, sz, st, storage_offset()), "UnsqueezeBackward",
                     [d](const Tensor& g) { return g.squeeze(d); });
}

Tensor Tensor::squeeze(int64_t d) const {
  if (dim() == 0) return *this;
  d = wrap_dim(d, dim());
  if (sizes()[d] != 1) return *this;
  Shape sz = sizes(), st = strides();
  sz.erase(sz.begin() + d);
  st.erase(st.begin() + d);
  return view_result(*this, make_view(*this, sz, st, storage_offset()), "SqueezeBackward",
                     [d](const Tensor& g) { return g.unsqueeze(d); });
}

Tensor Tensor::squeeze() const {
  Shape sz, st;
  for (int64_t i = 0; i < dim(); ++i)
    if (sizes()[i] != 1) {
      sz.push_back(sizes()[i]);
      st.push_back(strides()[i]);
    }
  Shape in_shape = sizes();
  return view_result(*this, make_view(*this, sz, st, storage_offset()), "SqueezeBackward",
                     [in_shape](const Tensor& g) { return g.reshape(in_shape); });
}

Tensor Tensor::expand(Shape shape) const {
  WEFT_CHECK((int64_t)shape.size() >= dim(), "expand: cannot expand ", str(), " to ",
             shape_str(shape));
  int64_t lead = (int64_t)shape.size() - dim();
  Shape st(shape.size(), 0);
  for (int64_t i = 0; i < (int64_t)shape.size(); ++i) {
    if (i < lead) {
      WEFT_CHECK(shape[i] >= 0, "expand: invalid size ", shape_str(shape));
      continue;
    }
    int64_t s = sizes()[i - lead];
    if (shape[i] == -1) shape[i] = s;
    WEFT_CHECK(s == shape[i] || s == 1, "expand: size ", s, " at dim ", i - lead,
               " cannot expand to ", shape[i], " (", str(), " to ", shape_str(shape), ")");
    st[i] = s == shape[i] ? strides()[i - lead] : 0;
  }
  Shape in_shape = sizes();
  return view_result(*this, make_view(*this, shape, st, storage_offset()), "ExpandBackward",
                     [in_shape](const Tensor& g) { return sum_to(g, in_shape); });
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim());
  end = wrap_dim(end, dim());
  WEFT_CHECK(start <= end, "flatten: start_dim ", start, " > end_dim ", end);
  Shape sz;
  for (int64_t i = 0; i < start; ++i) sz.push_back(sizes()[i]);
  int64_t m = 1;
  for (int64_t i = start; i <= end; ++i) m *= sizes()[i];
  sz.push_back(m);
  for (int64_t i = end + 1; i < dim(); ++i) sz.push_back(sizes()[i]);
  return reshape(sz);
}

std::vector<Tensor> Tensor::split_with_sizes(const std::vector<int64_t>& parts, int64_t d) const {
  d = wrap_dim(d, dim());
  int64_t total = 0;
  for (int64_t p : parts) total += p;
  WEFT_CHECK(total == sizes()[d], "split_with_sizes: sizes sum to ", total, " but dim ", d, " of ",
             str(), " has ", sizes()[d]);
  std::vector<Tensor> out;
  int64_t start = 0;
  for (int64_t p : parts) {
    out.push_back(narrow(d, start, p));
    start += p;
  }
  return out;
}

std::vector<Tensor> Tensor::split(int64_t split_size, int64_t d) const {
  WEFT_CHECK(split_size > 0, "split: split_size must be positive, got ", split_size);
  int64_t n = size(d);
  std::vector<int64_t> parts;
  for (int64_t s = 0; s < n; s += split_size) parts.push_back(std::min(split_size, n - s));
  if (parts.empty()) parts.push_back(0);
  return split_with_sizes(parts, d);
}

std::vector<Tensor> Tensor::chunk(int64_t chunks, int64_t d) const {
  WEFT_CHECK(chunks > 0, "chunk: chunks must be positive, got ", chunks);
  int64_t n = size(d);
  return split(std::max<int64_t>((n + chunks - 1) / chunks, 1), d);
}

Tensor cat(const std::vector<Tensor>& ts, int64_t dim) {
  WEFT_CHECK(!ts.empty(), "cat: expected a non-empty list of tensors");
  const Tensor& first = ts[0];
  dim = wrap_dim(dim, first.dim());
  Shape shape = first.sizes();
  WEFT_CHECK(first.dim() > 0, "cat: zero-dimensional tensor cannot be concatenated");
  int64_t total = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    const Tensor& t = ts[i];
    WEFT_CHECK(t.dtype() == first.dtype(), "cat: tensor ", i, " has dtype ", t.dtype(),
               ", expected ", first.dtype());
    WEFT_CHECK(t.device() == first.device(), "cat: tensor ", i, " is on ", t.device(),
               ", expected ", first.device());
    WEFT_CHECK(t.dim() == first.dim(), "cat: tensor ", i, " has ", t.dim(), " dims, expected ",
               first.dim());
    for (int64_t d = 0; d < t.dim(); ++d)
      WEFT_CHECK(d == dim || t.size(d) == shape[d], "cat: sizes must match except in dim ", dim,
                 "; tensor ", i, " is ", shape_str(t.sizes()), ", tensor 0 is ", shape_str(shape));
    total += t.size(dim);
  }
  shape[dim] = total;
  Tensor out = make_empty(shape, first.dtype(), first.device());
  std::vector<int64_t> parts;
  {
    NoGradGuard ng;
    int64_t off = 0;
    for (const Tensor& t : ts) {
      out.narrow(dim, off, t.size(dim)).copy_(t);
      off += t.size(dim);
      parts.push_back(t.size(dim));
    }
  }
  bool any = false;
  for (const Tensor& t : ts) any = any || t.requires_grad();
  if (any && GradMode::is_enabled()) {
    auto node = std::make_shared<FunctionNode>("CatBackward", [parts, dim](std::vector<Tensor>& g) {
      return g[0].split_with_sizes(parts, dim);
    });
    node->device = out.device();
    for (const Tensor& t : ts) node->next_edges.push_back(autograd::gradient_edge(t));
    autograd::set_gradient_edge(out, {node, 0});
  }
  return out;
}

Tensor stack(const std::vector<Tensor>& ts, int64_t dim) {
  WEFT_CHECK(!ts.empty(), "stack: expected a non-empty list of tensors");
  dim = wrap_dim(dim, ts[0].dim() + 1);
  std::vector<Tensor> us;
  for (size_t i = 0; i < ts.size(); ++i) {
    WEFT_CHECK(ts[i].sizes() == ts[0].sizes(), "stack: tensor ", i, " has shape ",
               shape_str(ts[i].sizes()), ", tensor 0 has ", shape_str(ts[0].sizes()));
    us.push_back(ts[i].unsqueeze(dim));
  }
  return cat(us, dim);
}

}  // namespace weft
