// Tensor: a reference-counted handle to a strided view of a Storage, plus the autograd
// state (requires_grad, grad, grad_fn). Copying a Tensor shares the data, as in PyTorch.
// Guarantees: every op checks shapes/dtypes/devices and throws weft::Error naming them;
// views share storage and carry (sizes, strides, offset) in elements.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "weft/device.h"
#include "weft/dtype.h"
#include "weft/error.h"

namespace weft {

// Sizes and strides: a std::vector<int64_t> in all but name, named so that `std::cout <<
// x.sizes()` finds its printer ("[2, 3]", as libtorch prints an IntArrayRef).
struct Shape : std::vector<int64_t> {
  using std::vector<int64_t>::vector;
  Shape() = default;
  Shape(const std::vector<int64_t>& v) : std::vector<int64_t>(v) {}
  Shape(std::vector<int64_t>&& v) : std::vector<int64_t>(std::move(v)) {}
  std::vector<int64_t> vec() const { return *this; }  // libtorch's IntArrayRef::vec()
};
std::ostream& operator<<(std::ostream& os, const Shape& s);
std::string shape_str(const Shape& s);  // "(2, 3)", as Python prints a shape tuple

// Raw memory owned by tensors that view it; freed into the caching allocator of its device
// (CPU, a CUDA device, or pinned host memory for CPU storage with `pinned`).
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  bool pinned = false;
  // Bumped by every in-place write to any view of this memory (autograd's saved-tensor check).
  std::atomic<uint32_t> version{0};
  // Set for memory this storage does not own (a shared-memory mapping): `owner` keeps it alive
  // and releases it with the last storage that holds it; it is never freed or resized here.
  std::shared_ptr<void> owner;
  Storage(size_t nbytes, Device device, bool pinned = false);
  Storage(void* data, size_t nbytes, std::shared_ptr<void> owner);  // CPU memory, not copied
  ~Storage();
  // Replaces this storage's memory by `nbytes` fresh, uninitialized bytes on the same device (0
  // frees it), in place: every tensor viewing this storage sees the new memory, and one whose
  // view reaches past nbytes must not be read until it grows back. The version is unchanged.
  // Not safe while another thread reads or writes the memory. FSDP frees and re-gathers its
  // unsharded parameters this way (Note [FSDP parameter lifecycle]), as PyTorch's
  // storage.resize_(0).
  void resize_(size_t nbytes);
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

class Tensor;
struct Node;
struct AccumulateGrad;
using PostAccumulateGradHook = std::function<void(Tensor&)>;

// Autograd state of one tensor; created lazily so plain tensors stay light.
struct AutogradMeta {
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // null for leaves
  uint32_t output_nr = 0;         // which output of grad_fn this tensor is
  std::unique_ptr<Tensor> grad;
  std::weak_ptr<AccumulateGrad> grad_accumulator;
  std::vector<std::pair<int, PostAccumulateGradHook>> post_acc_hooks;
  int next_hook_id = 0;
  // The owner does not read this leaf's values once its gradient is computed: a backward
  // formula may write the gradient over them (Note [Gradient into the parameter's memory]).
  bool grad_overwrites_values = false;
  // Where a backward formula may write this leaf's gradient times grad_destination_scale instead
  // of into a buffer of its own (DDP's bucket slot; Note [Gradient into a destination]); null:
  // nowhere. grad_destination_written: the .grad AccumulateGrad kept is the one written there.
  std::unique_ptr<Tensor> grad_destination;
  float grad_destination_scale = 1.0f;
  bool grad_destination_written = false;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;
  Shape sizes, strides;
  DType dtype = DType::Float32;
  std::unique_ptr<AutogradMeta> autograd;
  AutogradMeta& meta() {
    if (!autograd) autograd = std::make_unique<AutogradMeta>();
    return *autograd;
  }
};

struct TensorOptions {
  DType dtype = DType::Float32;
  Device device = current_device();
  bool requires_grad = false;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }

  // --- metadata ---
  const Shape& sizes() const { return checked()->sizes; }
  const Shape& shape() const { return sizes(); }
  const Shape& strides() const { return checked()->strides; }
  int64_t size(int64_t dim) const;
  int64_t stride(int64_t dim) const;
  int64_t dim() const { return (int64_t)sizes().size(); }
  int64_t numel() const;
  int64_t storage_offset() const { return checked()->offset; }
  DType dtype() const { return checked()->dtype; }
  Device device() const { return checked()->storage->device; }
  bool is_contiguous() const;
  size_t nbytes() const { return (size_t)numel() * itemsize(dtype()); }
  std::string str() const;  // "Tensor[float32, (2, 3)]" for messages

  // Host pointers to the first element: CPU tensors only (a CUDA tensor throws, naming it, so
  // that a CPU kernel never dereferences device memory).
  template <typename T>
  T* data_ptr() const;
  void* raw_data() const;
  // The first element's address on the tensor's own device (a device pointer for CUDA).
  void* device_ptr() const;
  // item() and to_vector_*() copy from any device.
  template <typename T>
  T item() const;
  std::vector<float> to_vector_float() const;
  std::vector<int64_t> to_vector_int64() const;

  // --- views (share storage) ---
  Tensor view(Shape shape) const;
  Tensor reshape(Shape shape) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const { return transpose(0, 1); }
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor operator[](int64_t index) const { return select(0, index); }
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor expand(Shape shape) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor contiguous() const;
  std::vector<Tensor> split(int64_t split_size, int64_t dim = 0) const;
  std::vector<Tensor> split_with_sizes(const std::vector<int64_t>& sizes, int64_t dim = 0) const;
  std::vector<Tensor> chunk(int64_t chunks, int64_t dim = 0) const;

  // --- copies and conversion ---
  Tensor clone() const;
  Tensor detach() const;
  Tensor to(DType dtype) const;
  // non_blocking: host<->CUDA copies from/to pinned memory return before they finish (ordered on
  // the device's current stream), as in PyTorch; otherwise the copy has finished on return.
  Tensor to(Device device, bool non_blocking = false) const;
  Tensor& copy_(const Tensor& src, bool non_blocking = false);
  // A copy of this CPU tensor in page-locked memory (needs CUDA), for asynchronous copies.
  Tensor pin_memory() const;
  bool is_pinned() const { return impl_ && impl_->storage->pinned; }
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }

  // --- arithmetic (broadcasting, differentiable) ---
  Tensor operator-() const;
  Tensor exp() const;
  Tensor log() const;
  Tensor sqrt() const;
  Tensor abs() const;
  Tensor pow(double exponent) const;
  Tensor relu() const;
  Tensor sigmoid() const;
  Tensor tanh() const;
  Tensor clamp(std::optional<double> min, std::optional<double> max) const;
  Tensor sum() const;
  Tensor sum(std::vector<int64_t> dims, bool keepdim = false) const;
  Tensor mean() const;
  Tensor mean(std::vector<int64_t> dims, bool keepdim = false) const;
  Tensor max() const;
  std::pair<Tensor, Tensor> max(int64_t dim, bool keepdim = false) const;  // values, indices
  Tensor argmax(int64_t dim, bool keepdim = false) const;
  Tensor matmul(const Tensor& other) const;
  Tensor softmax(int64_t dim) const;
  Tensor log_softmax(int64_t dim) const;
  Tensor eq(const Tensor& other) const;  // int64 0/1, not differentiable

  // --- in-place (for optimizers and buffers; refused on leaves that require grad
  //     while grad mode is on, as in PyTorch) ---
  Tensor& add_(const Tensor& other, double alpha = 1.0);
  Tensor& add_(double value);
  Tensor& mul_(double value);
  Tensor& mul_(const Tensor& other);

  // --- version counter (PyTorch's t._version) ---
  // Grows with every in-place write to this tensor's memory (copy_, fill_, add_, mul_, optimizer
  // steps), shared by its views. A backward that reads a tensor saved at another version fails
  // with an error instead of computing a wrong gradient. Compare values: a fresh tensor may start
  // above 0 (factories fill it in place). Writers through data_ptr() that change a tensor the
  // user can see call bump_version() themselves.
  uint32_t _version() const { return checked()->storage->version.load(std::memory_order_relaxed); }
  void bump_version() const { checked()->storage->version.fetch_add(1, std::memory_order_relaxed); }

  // --- autograd ---
  bool requires_grad() const { return impl_ && impl_->autograd && impl_->autograd->requires_grad; }
  Tensor& requires_grad_(bool r = true);
  bool is_leaf() const { return !impl_ || !impl_->autograd || !impl_->autograd->grad_fn; }
  const std::shared_ptr<Node>& grad_fn() const;
  Tensor grad() const;     // undefined Tensor when no gradient yet
  Tensor& mutable_grad();  // the slot itself, for optimizers and DDP
  void set_grad(const Tensor& g);
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  // Fires after this leaf's .grad has been accumulated in a backward pass (see autograd.h).
  int register_post_accumulate_grad_hook(PostAccumulateGradHook hook);
  void remove_post_accumulate_grad_hook(int id);

 private:
  TensorImpl* checked() const {
    WEFT_CHECK(impl_, "operation on an undefined Tensor");
    return impl_.get();
  }
  std::shared_ptr<TensorImpl> impl_;
};

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator+(const Tensor& a, double b);
Tensor operator-(const Tensor& a, double b);
Tensor operator*(const Tensor& a, double b);
Tensor operator/(const Tensor& a, double b);
inline Tensor operator+(double a, const Tensor& b) { return b + a; }
inline Tensor operator*(double a, const Tensor& b) { return b * a; }
Tensor operator-(double a, const Tensor& b);
Tensor operator/(double a, const Tensor& b);

std::ostream& operator<<(std::ostream& os, const Tensor& t);
// True when `t` (rank 4, more than one channel) is laid out NHWC in memory (PyTorch's
// t.is_contiguous(memory_format=torch.channels_last)).
bool is_channels_last(const Tensor& t);

// Internal: a tensor over fresh storage, and a view sharing another tensor's storage.
Tensor make_empty(const Shape& shape, DType dtype = kFloat32, Device device = current_device());
Tensor make_empty_pinned(const Shape& shape, DType dtype);
// A contiguous CPU tensor over `data` (not copied), which `owner` keeps alive (see Storage).
Tensor make_over(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner);
Tensor make_view(const Tensor& base, Shape sizes, Shape strides, int64_t offset);
Shape contiguous_strides(const Shape& sizes);
int64_t shape_numel(const Shape& s);
int64_t wrap_dim(int64_t dim, int64_t ndim);

}  // namespace weft
