// torch.cuda for weft: device queries, streams and events, the caching allocator's statistics
// and the TF32 switch. Declared in every build, so callers need no #ifdef: without the CUDA
// backend (src/cuda/no_cuda.cpp; WEFT_WITH_CUDA is defined only in builds with it) the queries
// answer "none" (is_available() false, no devices, no current streams) and whatever needs a
// device throws weft::Error. Includes no CUDA header: streams and events are opaque handles.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "weft/tensor.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*
struct CUevent_st;   // cudaEvent_t is CUevent_st*

namespace weft::cuda {

// True when this build of weft has the CUDA backend, whether or not a device can be used
// (torch.backends.cuda.is_built()).
bool is_built();
// True when this build has the CUDA backend and at least one device can be used.
bool is_available();
// Devices visible to this process; 0 without the backend, a driver or a GPU.
int device_count();
// Waits for all work queued on `device` (-1: every device weft has used; nothing to do without
// devices).
void synchronize(int device = -1);

// TF32 tensor-core math for float32 GEMMs. Off by default, so that float32 products round as
// PyTorch's default (torch.backends.cuda.matmul.allow_tf32 = False); on trades ~10 bits of
// mantissa in the products for several times the throughput.
void set_allow_tf32(bool allow);
bool allow_tf32();

// The calling thread's CUDA device (cudaGetDevice / cudaSetDevice), used where an API takes
// device -1. Ops on CUDA tensors switch to their tensors' device themselves.
int current_device();
void set_device(int device);

// A CUDA stream on one device. A value handle: streams come from the default stream or from
// a per-device pool (as PyTorch's), live as long as the process, and copy freely.
class Stream {
 public:
  Stream(int device, CUstream_st* handle) : device_(device), handle_(handle) {}
  int device() const { return device_; }
  CUstream_st* handle() const { return handle_; }  // a cudaStream_t
  bool query() const;                              // all queued work done?
  void synchronize() const;                        // waits on the host for it
  bool operator==(const Stream&) const = default;

 private:
  int device_;
  CUstream_st* handle_;
};

// The device's default (null) stream.
Stream default_stream(int device);
// A stream from the device's pool (round robin over 32 non-blocking streams).
Stream stream_from_pool(int device, bool high_priority = false);
// The calling thread's current stream on `device` (-1: the current CUDA device); kernels and
// copies of tensors on that device are queued there. Starts as the default stream.
Stream current_stream(int device = -1);
void set_current_stream(const Stream& s);

// The calling thread's current stream of every device, and making such a list current in
// another thread: a thread starts on the default streams, so the threads that work for a caller
// (parallel_apply's replicas, the autograd engine's device workers) take the caller's streams,
// as PyTorch's do, to stay ordered with the work it queued before and will queue after them.
// Without devices the list is empty, and making an empty list current does nothing.
std::vector<Stream> current_streams();
void set_current_streams(const std::vector<Stream>& streams);

// Makes `s` current for its device until the guard ends (as torch.cuda.stream(s)).
class StreamGuard {
 public:
  explicit StreamGuard(const Stream& s);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream prev_;
};

// A CUDA event, created on first record. Move-only; destroyed with the object.
class Event {
 public:
  explicit Event(bool enable_timing = false) : timing_(enable_timing) {}
  ~Event();
  Event(Event&& o) noexcept;
  Event& operator=(Event&& o) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  void record(const Stream& s);       // marks s's current point
  void block(const Stream& s) const;  // s waits (on the device) until this event has happened
  bool query() const;                 // happened (true when never recorded)?
  void synchronize() const;           // waits on the host
  float elapsed_time(const Event& end) const;  // ms; both need enable_timing
  bool recorded() const { return event_ != nullptr; }
  int device() const { return device_; }

 private:
  bool timing_;
  int device_ = -1;
  CUevent_st* event_ = nullptr;
};

// --- the caching allocator (one per device) ---
struct MemoryStats {
  size_t allocated_bytes = 0;       // in blocks handed to tensors now
  size_t peak_allocated_bytes = 0;  // high-water mark since the last reset_peak_memory_stats
  size_t reserved_bytes = 0;        // obtained with cudaMalloc and not yet returned
  size_t cached_bytes = 0;          // reserved but not allocated (free for reuse)
  uint64_t raw_mallocs = 0;         // cudaMalloc calls so far (0 new ones in a warm step)
  uint64_t raw_frees = 0;           // cudaFree calls so far (empty_cache and out-of-memory retry)
};
MemoryStats memory_stats(int device = -1);
void reset_peak_memory_stats(int device = -1);
// Returns every wholly free cached segment of every device to CUDA.
void empty_cache();
// Tells the allocator that `t`'s memory is also used by work queued on `s`: when t's storage
// is freed, the block is reused only after that work is done (torch's Tensor.record_stream).
void record_stream(const Tensor& t, const Stream& s);

}  // namespace weft::cuda
