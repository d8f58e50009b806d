// Tensor metadata, views and copies. Views are differentiable: their backward maps the
// gradient back onto the base's shape.
#include "weft/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>

#include "cuda/allocator.h"
#include "ops/cpu/dtype_convert.h"
#include "ops/stubs/copy.h"
#include "tensor/memory_overlap.h"
#include "weft/allocator.h"
#include "weft/autograd/graph.h"
#include "weft/ops.h"

namespace weft {

namespace {
thread_local Device t_current_device = Device::CPU();
}
Device current_device() { return t_current_device; }
DeviceGuard::DeviceGuard(Device d) : prev_(t_current_device) { t_current_device = d; }
DeviceGuard::~DeviceGuard() { t_current_device = prev_; }

// Without the CUDA backend the CUDA allocators throw, saying so (src/cuda/no_cuda.cpp).
Storage::Storage(size_t n, Device d, bool pin) : nbytes(n), device(d), pinned(pin) {
  if (pin) {
    WEFT_CHECK(d.is_cpu(), "pinned memory is host memory, not ", d);
    data = cuda::detail::pinned_alloc(n);
  } else if (d.is_cuda()) {
    data = cuda::detail::device_alloc(n, d.index);
  } else {
    data = cpu_alloc(n);
  }
}
Storage::~Storage() {
  if (pinned)
    cuda::detail::pinned_free(data);
  else if (device.is_cuda())
    cuda::detail::device_free(data, device.index);
  else
    cpu_free(data, nbytes);
}

std::string shape_str(const Shape& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  if (s.size() == 1) r += ",";
  return r + ")";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& sizes) {
  Shape st(sizes.size());
  int64_t acc = 1;
  for (int64_t i = (int64_t)sizes.size() - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= std::max<int64_t>(sizes[i], 1);
  }
  return st;
}

int64_t wrap_dim(int64_t dim, int64_t ndim) {
  int64_t n = std::max<int64_t>(ndim, 1);
  WEFT_CHECK(dim >= -n && dim < n, "dimension ", dim, " out of range for a tensor of ", ndim,
             " dims");
  return dim < 0 ? dim + n : dim;
}

Tensor make_empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) WEFT_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>((size_t)shape_numel(shape) * itemsize(dtype), device);
  impl->sizes = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor make_empty_pinned(const Shape& shape, DType dtype) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage =
      std::make_shared<Storage>((size_t)shape_numel(shape) * itemsize(dtype), Device::CPU(), true);
  impl->sizes = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor make_view(const Tensor& base, Shape sizes, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.impl()->storage;
  impl->offset = offset;
  impl->sizes = std::move(sizes);
  impl->strides = std::move(strides);
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

int64_t Tensor::size(int64_t d) const { return sizes()[wrap_dim(d, dim())]; }
int64_t Tensor::stride(int64_t d) const { return strides()[wrap_dim(d, dim())]; }
int64_t Tensor::numel() const { return shape_numel(sizes()); }

bool Tensor::is_contiguous() const {
  const auto& sz = sizes();
  const auto& st = strides();
  int64_t expected = 1;
  for (int64_t i = (int64_t)sz.size() - 1; i >= 0; --i) {
    if (sz[i] == 1) continue;
    if (st[i] != expected) return false;
    expected *= sz[i];
  }
  return true;
}

bool is_channels_last(const Tensor& t) {
  if (t.dim() != 4) return false;
  const int64_t C = t.size(1), H = t.size(2), W = t.size(3);
  return t.stride(1) == 1 && t.stride(3) == C && t.stride(2) == W * C && t.stride(0) == H * W * C &&
         C > 1;
}

std::string Tensor::str() const {
  if (!impl_) return "Tensor[undefined]";
  return std::string("Tensor[") + dtype_name(dtype()) + ", " + shape_str(sizes()) + "]";
}

void* Tensor::device_ptr() const {
  return (char*)checked()->storage->data + impl_->offset * (int64_t)itemsize(impl_->dtype);
}

void* Tensor::raw_data() const {
  WEFT_CHECK(checked()->storage->device.is_cpu(), "host access to the data of ", str(), " on ",
             device(),
             ": this operation has no CUDA kernel (move the tensor with .to(Device::CPU()))");
  return device_ptr();
}

template <typename T>
static constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::Float32;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::Int64;
}

template <typename T>
T* Tensor::data_ptr() const {
  WEFT_CHECK(dtype() == dtype_of<T>(), "data_ptr<", dtype_name(dtype_of<T>()), ">() on ", str());
  return static_cast<T*>(raw_data());
}
template float* Tensor::data_ptr<float>() const;
template int64_t* Tensor::data_ptr<int64_t>() const;

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

// ---------------- views ----------------

namespace {

// Records a view op whose backward is `fn(grad)`.
Tensor view_result(const Tensor& self, Tensor out, const char* name,
                   std::function<Tensor(const Tensor&)> fn) {
  if (autograd::any_requires_grad({&self})) {
    autograd::record(name, {&self}, out,
                     [fn](std::vector<Tensor>& g) { return std::vector<Tensor>{fn(g[0])}; });
  }
  return out;
}

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

// ---------------- copies ----------------

// The kernels are the device's (ops/stubs/copy.h; Note [Device dispatch] in ops/dispatch.h).
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

// ---------------- autograd accessors ----------------

Tensor& Tensor::requires_grad_(bool r) {
  WEFT_CHECK(is_leaf(), "requires_grad_ can only change leaf tensors; use detach()");
  WEFT_CHECK(!r || dtype() == kFloat32 || dtype() == DType::BFloat16 || dtype() == DType::Float16,
             "only floating point tensors can require gradients, got ", str());
  checked()->meta().requires_grad = r;
  return *this;
}

const std::shared_ptr<Node>& Tensor::grad_fn() const {
  static const std::shared_ptr<Node> none;
  return impl_ && impl_->autograd ? impl_->autograd->grad_fn : none;
}

Tensor Tensor::grad() const {
  if (!impl_ || !impl_->autograd || !impl_->autograd->grad) return Tensor();
  return *impl_->autograd->grad;
}

Tensor& Tensor::mutable_grad() {
  auto& m = checked()->meta();
  if (!m.grad) m.grad = std::make_unique<Tensor>();
  return *m.grad;
}

void Tensor::set_grad(const Tensor& g) {
  if (g.defined())
    WEFT_CHECK(g.sizes() == sizes() && g.dtype() == dtype(), "set_grad: gradient ", g.str(),
               " does not match ", str());
  mutable_grad() = g;
}

int Tensor::register_post_accumulate_grad_hook(PostAccumulateGradHook hook) {
  WEFT_CHECK(is_leaf() && requires_grad(),
             "post-accumulate-grad hooks need a leaf tensor that requires grad, got ", str());
  auto& m = impl_->meta();
  int id = m.next_hook_id++;
  m.post_acc_hooks.emplace_back(id, std::move(hook));
  return id;
}

void Tensor::remove_post_accumulate_grad_hook(int id) {
  if (!impl_ || !impl_->autograd) return;
  auto& h = impl_->autograd->post_acc_hooks;
  h.erase(std::remove_if(h.begin(), h.end(), [id](auto& p) { return p.first == id; }), h.end());
}

// ---------------- printing ----------------

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "tensor(undefined)";
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
  return os << ")";
}

}  // namespace weft
