// The tensor's core (c10's TensorImpl side): storage, shapes and strides, raw data access and
// the autograd metadata a tensor carries. The methods that compute — views recorded for autograd,
// copies, conversions, math, printing — are ops, implemented under src/ops/ (shape_ops.cpp,
// copy.cpp, print.cpp, ...), as ATen implements the Tensor's methods above c10.
#include "weft/tensor.h"

#include <algorithm>
#include <sstream>

#include "cuda/allocator.h"
#include "weft/allocator.h"

namespace weft {

namespace {
thread_local Device t_current_device = Device::CPU();
}
Device current_device() { return t_current_device; }
DeviceGuard::DeviceGuard(Device d) : prev_(t_current_device) { t_current_device = d; }
DeviceGuard::~DeviceGuard() { t_current_device = prev_; }

namespace {
// Where a storage's bytes come from and go back to: pinned host memory, a CUDA device, or the
// CPU caching allocator. Without the CUDA backend the CUDA allocators throw, saying so
// (src/cuda/no_cuda.cpp).
void* storage_alloc(size_t n, Device d, bool pinned) {
  if (pinned) return cuda::detail::pinned_alloc(n);
  if (d.is_cuda()) return cuda::detail::device_alloc(n, d.index);
  return cpu_alloc(n);
}
void storage_free(void* p, size_t n, Device d, bool pinned) {
  if (pinned)
    cuda::detail::pinned_free(p);
  else if (d.is_cuda())
    cuda::detail::device_free(p, d.index);
  else
    cpu_free(p, n);
}
}  // namespace

Storage::Storage(size_t n, Device d, bool pin) : nbytes(n), device(d), pinned(pin) {
  WEFT_CHECK(!pin || d.is_cpu(), "pinned memory is host memory, not ", d);
  data = storage_alloc(n, d, pin);
}

Storage::Storage(void* d, size_t n, std::shared_ptr<void> o)
    : data(d), nbytes(n), device(Device::CPU()), owner(std::move(o)) {
  WEFT_CHECK(owner, "Storage over external memory needs an owner");
}

void Storage::resize_(size_t n) {
  if (n == nbytes && (data || n == 0)) return;
  WEFT_CHECK(!owner, "cannot resize a storage over memory it does not own (", nbytes, " bytes)");
  if (data) storage_free(data, nbytes, device, pinned);  // first: old and new never held together
  data = nullptr;
  nbytes = 0;
  if (n == 0) return;
  data = storage_alloc(n, device, pinned);
  nbytes = n;
}

Storage::~Storage() {
  if (data && !owner) storage_free(data, nbytes, device, pinned);  // null: freed by resize_(0)
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

namespace {
// A contiguous tensor of `shape` over all of `storage`.
Tensor contiguous_over(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->sizes = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}
size_t bytes_of(const Shape& shape, DType dtype) {
  return (size_t)shape_numel(shape) * itemsize(dtype);
}
}  // namespace

Tensor make_empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) WEFT_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  return contiguous_over(std::make_shared<Storage>(bytes_of(shape, dtype), device), shape, dtype);
}

Tensor make_empty_pinned(const Shape& shape, DType dtype) {
  return contiguous_over(std::make_shared<Storage>(bytes_of(shape, dtype), Device::CPU(), true),
                         shape, dtype);
}

Tensor make_over(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner) {
  return contiguous_over(std::make_shared<Storage>(data, bytes_of(shape, dtype), std::move(owner)),
                         shape, dtype);
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

}  // namespace weft
