// Joining tensors: cat and stack, differentiable (backward slices the gradient apart).
#include "weft/autograd/graph.h"
#include "weft/ops.h"

namespace weft {

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
