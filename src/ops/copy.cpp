// The Tensor's copies (ATen's Copy.cpp and friends): copy_ and fill_ with their CPU kernels,
// the conversions to(dtype)/to(device), clone, contiguous and pin_memory (differentiable where
// PyTorch's are), and reading values out with item() and to_vector_*().
#include <array>
#include <cstring>

#include "ops/cpu/dtype_convert.h"
#include "ops/cpu/loops.h"
#include "ops/cpu/parallel.h"
#include "ops/view_result.h"
#include "tensor/memory_overlap.h"
#include "weft/autograd/graph.h"
#include "weft/ops.h"
#ifdef WEFT_WITH_CUDA
#include "ops/cuda/cuda_ops.h"
#endif

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

namespace {
template <typename Dst, typename Src>
void copy_kernel(const Tensor& dst, const Tensor& src) {
  Dst* d = static_cast<Dst*>(dst.impl()->storage->data);
  const Src* s = static_cast<const Src*>(src.impl()->storage->data);
  cpu::for_each_run<2>(dst.sizes(), {&dst.strides(), &src.strides()},
                       {dst.storage_offset(), src.storage_offset()},
                       [&](std::array<int64_t, 2> o, int64_t n, std::array<int64_t, 2> st) {
                         Dst* dp = d + o[0];
                         const Src* sp = s + o[1];
                         if (st[0] == 1 && st[1] == 1) {
                           if constexpr (std::is_same_v<Dst, Src>)
                             std::memcpy(dp, sp, n * sizeof(Dst));
                           else if constexpr (std::is_same_v<Dst, float> && cpu::is_half_v<Src>)
                             cpu::widen(sp, n, dp);
                           else if constexpr (cpu::is_half_v<Dst> && std::is_same_v<Src, float>)
                             cpu::narrow(sp, n, dp);
                           else
                             for (int64_t i = 0; i < n; ++i) dp[i] = cpu::convert<Dst>(sp[i]);
                         } else {
                           for (int64_t i = 0; i < n; ++i)
                             dp[i * st[0]] = cpu::convert<Dst>(sp[i * st[1]]);
                         }
                       });
}
}  // namespace

Tensor& Tensor::copy_(const Tensor& src, bool non_blocking) {
  WEFT_CHECK(src.defined(), "copy_ from an undefined tensor");
  WEFT_CHECK(!(requires_grad() && is_leaf() && GradMode::is_enabled()),
             "a leaf tensor that requires grad is used in an in-place copy_; use NoGradGuard");
  detail::assert_no_partial_overlap(*this, src, "copy_");
  bump_version();
  Tensor s = src.sizes() == sizes() ? src : src.expand(sizes());
#ifdef WEFT_WITH_CUDA
  if (device().is_cuda() || s.device().is_cuda()) {
    cuda::copy_(*this, s, non_blocking);
    return *this;
  }
#else
  (void)non_blocking;  // only host<->CUDA copies can be asynchronous
#endif
  DType dt = dtype(), st = s.dtype();
  if (dt == st && is_contiguous() && s.is_contiguous()) {
    // One flat copy, split across the intra-op threads when it is big.
    char* d = static_cast<char*>(raw_data());
    const char* p = static_cast<const char*>(s.raw_data());
    const int64_t bytes = (int64_t)nbytes();
    cpu::parallel_for(0, bytes, (int64_t)1 << 20,
                      [&](int64_t b, int64_t e) { std::memcpy(d + b, p + b, (size_t)(e - b)); });
    return *this;
  }
  cpu::dispatch_dtype(dt, [&]<typename D>() {
    cpu::dispatch_dtype(st, [&]<typename S>() { copy_kernel<D, S>(*this, s); });
  });
  return *this;
}

Tensor& Tensor::fill_(double value) {
  WEFT_CHECK(!(requires_grad() && is_leaf() && GradMode::is_enabled()),
             "a leaf tensor that requires grad is used in an in-place fill_; use NoGradGuard");
  bump_version();
#ifdef WEFT_WITH_CUDA
  if (device().is_cuda()) {
    cuda::fill_(*this, value);
    return *this;
  }
#endif
  auto run = [&](auto v) {
    using T = decltype(v);
    T* d = static_cast<T*>(impl_->storage->data);
    cpu::for_each_run<1>(sizes(), {&strides()}, {storage_offset()},
                         [&](std::array<int64_t, 1> o, int64_t n, std::array<int64_t, 1> st) {
                           for (int64_t i = 0; i < n; ++i) d[o[0] + i * st[0]] = v;
                         });
  };
  cpu::dispatch_dtype(dtype(), [&]<typename T>() {
    if constexpr (std::is_same_v<T, int64_t>)
      run((int64_t)value);
    else
      run(cpu::convert<T>((float)value));
  });
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
