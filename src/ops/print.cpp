// Printing a tensor as PyTorch does: tensor([...], dtype=..., device=..., requires_grad=True),
// and a Shape as libtorch prints sizes: [2, 3]. Each is formatted whole first and handed to the
// stream in one write, so that prints from several threads (DataParallel's replicas) to
// std::cout, which passes every write to stdio under its lock, cannot interleave inside one
// (Note [Replica output]).
#include <functional>
#include <iomanip>
#include <sstream>

#include "weft/autograd/graph.h"
#include "weft/tensor.h"

namespace weft {

namespace {

void format(std::ostream& os, const Tensor& t) {
  // 16-bit floats print through float32 (exact); the dtype is in the suffix.
  Tensor c = t.detach().to(Device::CPU()).contiguous();
  if (is_reduced_float(c.dtype())) c = c.to(kFloat32);
  const int64_t n = c.numel();
  const bool is_float = c.dtype() == kFloat32;
  auto elem = [&](int64_t i) {
    std::ostringstream e;
    if (is_float)
      e << std::setprecision(4) << std::fixed << c.data_ptr<float>()[i];
    else
      e << c.data_ptr<int64_t>()[i];
    return e.str();
  };
  const Shape& sz = c.sizes();
  const bool summarize = n > 1000;
  std::function<void(int64_t, int64_t, int)> rec = [&](int64_t d, int64_t base, int indent) {
    if (d == (int64_t)sz.size()) {
      os << elem(base);
      return;
    }
    os << "[";
    int64_t stride = c.strides()[d];
    for (int64_t i = 0; i < sz[d]; ++i) {
      if (summarize && sz[d] > 6 && i == 3) {
        os << "...";
        i = sz[d] - 3;
        os << (d + 1 == (int64_t)sz.size() ? ", " : ",\n" + std::string(indent + 1, ' '));
      }
      rec(d + 1, base + i * stride, indent + 1);
      if (i + 1 < sz[d])
        os << (d + 1 == (int64_t)sz.size() ? ", " : ",\n" + std::string(indent + 1, ' '));
    }
    os << "]";
  };
  os << "tensor(";
  rec(0, 0, 7);
  if (t.dtype() != kFloat32) os << ", dtype=" << t.dtype();
  if (t.device() != Device::CPU()) os << ", device=" << t.device();
  if (t.requires_grad())
    os << (t.is_leaf() ? ", requires_grad=True" : ", grad_fn=<" + t.grad_fn()->name() + ">");
  os << ")";
}

}  // namespace

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "tensor(undefined)";
  std::ostringstream text;
  format(text, t);
  return os << text.str();
}

std::ostream& operator<<(std::ostream& os, const Shape& s) {
  std::string text = "[";
  for (size_t i = 0; i < s.size(); ++i) text += (i ? ", " : "") + std::to_string(s[i]);
  return os << text + "]";
}

}  // namespace weft
