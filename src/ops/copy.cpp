// The Tensor's copies (ATen's Copy.cpp and friends): copy_ and fill_ (their kernels behind
// copy_stub/fill_stub, Note [Device dispatch] in docs/ARCHITECTURE.md), the conversions
// to(dtype)/to(device), clone, contiguous and pin_memory (differentiable where PyTorch's are),
// and reading values out with item() and to_vector_*().
#include "ops/stubs/copy.h"

#include "ops/cpu/dtype_convert.h"
#include "ops/view_result.h"
#include "tensor/memory_overlap.h"
#include "weft/autograd/graph.h"
#include "weft/ops.h"

namespace weft {

using detail::view_result;

template <typename T>
T Tensor::item() const {
  WEFT_CHECK(numel() == 1, "item() needs exactly one element, got ", str());
  if (!device().is_cpu()) return to(Device::CPU()).item<T>();
  if (dtype() == kInt64) return (T) * static_cast<int64_t*>(raw_data());
  T out{};
  cpu::dispatch_dtype(dtype(), [&]<typename E>() {
    if constexpr (!std::is_same_v<E, int64_t>) out = (T)cpu::to_float(*static_cast<E*>(raw_data()));
  });
  return out;
}
template float Tensor::item<float>() const;
template double Tensor::item<double>() const;
template int64_t Tensor::item<int64_t>() const;

std::vector<float> Tensor::to_vector_float() const {
  Tensor c = to(kFloat32).to(Device::CPU()).contiguous();
  const float* p = c.data_ptr<float>();
  return std::vector<float>(p, p + c.numel());
}

std::vector<int64_t> Tensor::to_vector_int64() const {
  Tensor c = to(kInt64).to(Device::CPU()).contiguous();
  const int64_t* p = c.data_ptr<int64_t>();
  return std::vector<int64_t>(p, p + c.numel());
}

Tensor& Tensor::copy_(const Tensor& src, bool non_blocking) {
  WEFT_CHECK(src.defined(), "copy_ from an undefined tensor");
  WEFT_CHECK(!(requires_grad() && is_leaf() && GradMode::is_enabled()),
             "a leaf tensor that requires grad is used in an in-place copy_; use NoGradGuard");
  detail::assert_no_partial_overlap(*this, src, "copy_");
  bump_version();
  Tensor s = src.sizes() == sizes() ? src : src.expand(sizes());
  // Between a host and a device the copy is the device side's.
  ops::copy_stub(device().is_cpu() ? s.device() : device(), *this, s, non_blocking);
  return *this;
}

Tensor& Tensor::fill_(double value) {
  WEFT_CHECK(!(requires_grad() && is_leaf() && GradMode::is_enabled()),
             "a leaf tensor that requires grad is used in an in-place fill_; use NoGradGuard");
  bump_version();
  ops::fill_stub(device(), *this, value);
  return *this;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = make_empty(sizes(), dtype(), device());
  {
    NoGradGuard ng;
    out.copy_(*this);
  }
  return view_result(*this, out, "ContiguousBackward", [](const Tensor& g) { return g; });
}

Tensor Tensor::clone() const {
  Tensor out = make_empty(sizes(), dtype(), device());
  {
    NoGradGuard ng;
    out.copy_(*this);
  }
  return view_result(*this, out, "CloneBackward", [](const Tensor& g) { return g; });
}

Tensor Tensor::detach() const { return make_view(*this, sizes(), strides(), storage_offset()); }

Tensor Tensor::to(DType t) const {
  if (t == dtype()) return *this;
  Tensor out = make_empty(sizes(), t, device());
  {
    NoGradGuard ng;
    out.copy_(*this);
  }
  // Between floating types the cast is differentiable (the gradient is cast back), as PyTorch's.
  if (t == kInt64 || dtype() == kInt64) return out;
  const DType from = dtype();
  return view_result(*this, out, "ToCopyBackward", [from](const Tensor& g) { return g.to(from); });
}

Tensor Tensor::to(Device d, bool non_blocking) const {
  if (d == device()) return *this;
  Tensor out = make_empty(sizes(), dtype(), d);
  {
    NoGradGuard ng;
    out.copy_(*this, non_blocking);
  }
  Device from = device();
  return view_result(*this, out, "ToDeviceBackward",
                     [from](const Tensor& g) { return g.to(from); });
}

Tensor Tensor::pin_memory() const {
  WEFT_CHECK(device().is_cpu(), "pin_memory: only CPU tensors can be pinned, got ", str(), " on ",
             device());
  if (is_pinned()) return *this;
  Tensor out = make_empty_pinned(sizes(), dtype());
  NoGradGuard ng;
  out.copy_(*this);
  return out;
}

}  // namespace weft
