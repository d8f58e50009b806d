// CUDA kernels of Tensor::copy_ and fill_ (ops/stubs/copy.h): copies (strided, with dtype
// conversion) and fills on CUDA tensors, and the host<->device and device<->device transfers
// behind Tensor::copy_ / Tensor::to.
#include "cuda/allocator.h"
#include "ops/cuda/dispatch.cuh"
#include "ops/cuda/loops.cuh"
#include "ops/stubs/copy.h"
#include "weft/autograd/graph.h"

namespace weft::cuda {

namespace {

using detail::dispatch_dtype;
using detail::elem_ptr;
using detail::stream_of;

template <typename D, typename S>
struct ConvertOp {
  __device__ D operator()(S x) const { return detail::convert<D, S>(x); }
};

template <typename T>
struct FillOp {
  T value;
  __device__ T operator()() const { return value; }
};

// Same-device strided copy with conversion; src already has dst's shape.
void convert_copy(const Tensor& dst, const Tensor& src) {
  dispatch_dtype(dst.dtype(), [&]<typename D>() {
    dispatch_dtype(src.dtype(), [&]<typename S>() {
      detail::launch_elementwise<D, S>(dst, ConvertOp<D, S>{}, {src});
    });
  });
}

// `src` as a contiguous tensor of dtype `dt` on its own (CUDA) device; itself when it is one.
Tensor dense_on_device(const Tensor& src, DType dt) {
  if (src.dtype() == dt && src.is_contiguous()) return src;
  Tensor t = make_empty(src.sizes(), dt, src.device());
  convert_copy(t, src);
  return t;
}

bool host_pinned(const Tensor& t) { return t.impl()->storage->pinned; }

// First byte of a tensor's elements (elem_ptr<char> would offset by storage_offset() bytes, not
// elements).
char* byte_ptr(const Tensor& t) { return static_cast<char*>(t.device_ptr()); }

void host_to_device(const Tensor& dst, const Tensor& src, bool non_blocking) {
  // Conversions and layouts are handled on the device, where they are cheap.
  const Tensor s = src.is_contiguous() ? src : src.contiguous();
  const bool direct = dst.is_contiguous() && dst.dtype() == s.dtype();
  const Tensor target = direct ? dst : make_empty(dst.sizes(), s.dtype(), dst.device());
  const int dev = dst.device().index;
  detail::DeviceScope scope(dev);
  cudaStream_t stream = stream_of(dev);
  WEFT_CUDA_CHECK(cudaMemcpyAsync(byte_ptr(target), s.device_ptr(), s.nbytes(),
                                  cudaMemcpyHostToDevice, stream));
  if (!direct) convert_copy(dst, target);
  if (host_pinned(s)) {
    // From pageable memory the copy has been staged when cudaMemcpyAsync returns; from pinned
    // memory it runs later, so the block must not be reused (or, when blocking, written) before.
    if (non_blocking)
      detail::pinned_record_use(s.impl()->storage->data, current_stream(dev));
    else
      WEFT_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
}

void device_to_host(const Tensor& dst, const Tensor& src, bool non_blocking) {
  const Tensor s = dense_on_device(src, dst.dtype());
  const bool direct = dst.is_contiguous();
  const Tensor target = direct ? dst : make_empty(dst.sizes(), dst.dtype(), Device::CPU());
  const int dev = src.device().index;
  detail::DeviceScope scope(dev);
  cudaStream_t stream = stream_of(dev);
  WEFT_CUDA_CHECK(cudaMemcpyAsync(target.device_ptr(), byte_ptr(s), s.nbytes(),
                                  cudaMemcpyDeviceToHost, stream));
  if (direct && non_blocking && host_pinned(target)) {
    // The caller synchronizes (an event or the stream) before reading, as in PyTorch.
    detail::pinned_record_use(target.impl()->storage->data, current_stream(dev));
    return;
  }
  WEFT_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (!direct) {
    NoGradGuard ng;
    Tensor d = dst;
    d.copy_(target);
  }
}

void device_to_device(const Tensor& dst, const Tensor& src) {
  const Tensor s = dense_on_device(src, dst.dtype());
  const bool direct = dst.is_contiguous();
  const Tensor target = direct ? dst : make_empty(dst.sizes(), dst.dtype(), dst.device());
  const int sd = src.device().index, dd = dst.device().index;
  // The copy runs on dst's current stream after the work queued so far on src's, and src's
  // stream waits for it before it can reuse the source memory.
  Event src_ready;
  src_ready.record(current_stream(sd));
  src_ready.block(current_stream(dd));
  {
    detail::DeviceScope scope(dd);
    WEFT_CUDA_CHECK(
        cudaMemcpyPeerAsync(byte_ptr(target), dd, byte_ptr(s), sd, s.nbytes(), stream_of(dd)));
  }
  Event copied;
  copied.record(current_stream(dd));
  copied.block(current_stream(sd));
  if (!direct) convert_copy(dst, target);
}

// dst = src, any dtypes, any of CPU/CUDA on either side. Blocking unless `non_blocking` and the
// host side is pinned memory, as Tensor.copy_.
void copy_(const Tensor& dst, const Tensor& src, bool non_blocking) {
  WEFT_CHECK(src.sizes() == dst.sizes(), "cuda::copy_: shapes differ: ", dst.str(), " <- ",
             src.str());
  if (dst.numel() == 0) return;
  const Device dd = dst.device(), sd = src.device();
  if (dd == sd)
    convert_copy(dst, src);
  else if (dd.is_cuda() && sd.is_cuda())
    device_to_device(dst, src);
  else if (dd.is_cuda())
    host_to_device(dst, src, non_blocking);
  else
    device_to_host(dst, src, non_blocking);
}

void fill_(const Tensor& t, double value) {
  dispatch_dtype(t.dtype(), [&]<typename T>() {
    T v;
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
      v = __float2bfloat16_rn((float)value);
    else if constexpr (std::is_same_v<T, __half>)
      v = __float2half_rn((float)value);
    else
      v = (T)value;
    detail::launch_elementwise<T>(t, FillOp<T>{v}, {});
  });
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::copy_stub, CUDA, &copy_);
WEFT_REGISTER_DISPATCH(ops::fill_stub, CUDA, &fill_);

}  // namespace weft::cuda
