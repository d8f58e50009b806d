// A view op's autograd record: the output of `name` over `self`, whose backward is fn(grad).
// Shared by the shape ops and the copies (to, clone, contiguous).
#pragma once

#include <functional>

#include "weft/autograd/graph.h"

namespace weft::detail {

inline Tensor view_result(const Tensor& self, Tensor out, const char* name,
                          std::function<Tensor(const Tensor&)> fn) {
  if (autograd::any_requires_grad({&self})) {
    autograd::record(name, {&self}, out,
                     [fn](std::vector<Tensor>& g) { return std::vector<Tensor>{fn(g[0])}; });
  }
  return out;
}

}  // namespace weft::detail
