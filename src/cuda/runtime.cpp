// CUDA runtime glue: device queries, error translation, DeviceScope, the per-thread current
// stream of each device, the per-device stream pools, and Event.
#include <array>
#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "cuda/cuda_check.h"
#include "weft/cuda.h"

namespace weft::cuda {

namespace detail {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  cudaGetLastError();  // clear a sticky launch error so that the next call reports its own
  ::weft::detail::throw_error(file, line,
                              std::string("CUDA error: ") + call + " failed: " +
                                  cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

void throw_cublas_error(cublasStatus_t st, const char* call, const char* file, int line) {
  ::weft::detail::throw_error(file, line,
                              std::string("cuBLAS error: ") + call + " failed: " +
                                  cublasGetStatusName(st) + ": " + cublasGetStatusString(st));
}

namespace {
// The devices weft has made current on some thread, so that their primary contexts exist.
std::atomic<uint64_t> g_entered{0};
}  // namespace

void mark_entered(int device) {
  if (device >= 0 && device < 64) g_entered.fetch_or(uint64_t{1} << device);
}

bool entered(int device) {
  return device >= 0 && device < 64 && ((g_entered.load() >> device) & 1);
}

DeviceScope::DeviceScope(int device) {
  WEFT_CUDA_CHECK(cudaGetDevice(&prev_));
  if (prev_ != device) WEFT_CUDA_CHECK(cudaSetDevice(device));
  mark_entered(device);
}

DeviceScope::~DeviceScope() {
  // Since CUDA 12 cudaSetDevice creates the device's primary context: a fresh thread reports
  // device 0 as current, and switching back to it would put a context (~0.5 GB) on GPU 0 in
  // every process of a multi-GPU job. So a thread is switched back only to a device that
  // already has one from weft (PyTorch's MaybeSetDevice does the same).
  int now = -1;
  if (cudaGetDevice(&now) == cudaSuccess && now != prev_ && entered(prev_)) cudaSetDevice(prev_);
}

}  // namespace detail

namespace {

constexpr int kMaxDevices = 64;
constexpr int kPoolSize = 32;

int count_devices() {
  int n = 0;
  // No driver, no device, or a driver too old: CUDA is simply not available.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

int checked_device(int device) {
  const int n = device_count();
  WEFT_CHECK(n > 0, "CUDA is not available (no CUDA device or driver)");
  if (device < 0) device = current_device();
  WEFT_CHECK(device < n && device < kMaxDevices, "CUDA device ", device,
             " does not exist (device_count() is ", n, ")");
  return device;
}

// Pools of streams, created on first use of each device and kept for the process's life (as
// PyTorch's), so that a Stream handle never dangles.
struct StreamPools {
  std::mutex mu;
  std::array<std::vector<cudaStream_t>, kMaxDevices> normal, high;
  std::array<std::atomic<uint32_t>, kMaxDevices> next_normal{}, next_high{};
};
StreamPools& pools() {
  static StreamPools* p = new StreamPools();  // leaked: streams outlive static destructors
  return *p;
}

thread_local std::array<cudaStream_t, kMaxDevices> t_current{};  // null: the default stream

std::atomic<bool> g_allow_tf32{false};

}  // namespace

bool is_built() { return true; }

bool is_available() { return device_count() > 0; }

int device_count() {
  static const int n = count_devices();
  return n;
}

void synchronize(int device) {
  if (device < 0) {  // the devices weft has used: others have nothing to wait for
    for (int d = 0; d < device_count(); ++d)
      if (detail::entered(d)) synchronize(d);
    return;
  }
  detail::DeviceScope scope(checked_device(device));
  WEFT_CUDA_CHECK(cudaDeviceSynchronize());
}

void set_allow_tf32(bool allow) { g_allow_tf32 = allow; }
bool allow_tf32() { return g_allow_tf32; }

int current_device() {
  int d = 0;
  WEFT_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

void set_device(int device) {
  device = checked_device(device);
  WEFT_CUDA_CHECK(cudaSetDevice(device));
  detail::mark_entered(device);
}

bool Stream::query() const {
  detail::DeviceScope scope(device_);
  const cudaError_t e = cudaStreamQuery(handle_);
  if (e == cudaErrorNotReady) return false;
  WEFT_CUDA_CHECK(e);
  return true;
}

void Stream::synchronize() const {
  detail::DeviceScope scope(device_);
  WEFT_CUDA_CHECK(cudaStreamSynchronize(handle_));
}

Stream default_stream(int device) { return Stream(checked_device(device), nullptr); }

Stream stream_from_pool(int device, bool high_priority) {
  device = checked_device(device);
  StreamPools& p = pools();
  auto& pool = high_priority ? p.high[device] : p.normal[device];
  {
    std::lock_guard<std::mutex> lock(p.mu);
    if (pool.empty()) {
      detail::DeviceScope scope(device);
      int least = 0, greatest = 0;
      WEFT_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
      // Filled only once all kPoolSize streams exist: a creation that throws half way must not
      // leave a short pool that the modulo below would index past.
      std::vector<cudaStream_t> created;
      for (int i = 0; i < kPoolSize; ++i) {
        cudaStream_t s = nullptr;
        WEFT_CUDA_CHECK(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking,
                                                     high_priority ? greatest : least));
        created.push_back(s);
      }
      pool = std::move(created);
    }
  }
  auto& next = high_priority ? p.next_high[device] : p.next_normal[device];
  return Stream(device, pool[next++ % kPoolSize]);
}

Stream current_stream(int device) {
  device = checked_device(device);
  return Stream(device, t_current[device]);
}

void set_current_stream(const Stream& s) { t_current[checked_device(s.device())] = s.handle(); }

std::vector<Stream> current_streams() {
  std::vector<Stream> streams;
  for (int d = 0; d < device_count() && d < kMaxDevices; ++d) streams.emplace_back(d, t_current[d]);
  return streams;
}

void set_current_streams(const std::vector<Stream>& streams) {
  for (const Stream& s : streams) set_current_stream(s);
}

StreamGuard::StreamGuard(const Stream& s) : prev_(current_stream(s.device())) {
  set_current_stream(s);
}
StreamGuard::~StreamGuard() { set_current_stream(prev_); }

// cudaEventDestroy needs no current device, and a destructor must not throw (it may run while
// an exception unwinds, or after CUDA's own teardown at exit): errors are ignored.
Event::~Event() {
  if (event_) cudaEventDestroy(event_);
}

Event::Event(Event&& o) noexcept : timing_(o.timing_), device_(o.device_), event_(o.event_) {
  o.event_ = nullptr;
}

Event& Event::operator=(Event&& o) noexcept {
  if (this != &o) {
    if (event_) cudaEventDestroy(event_);
    timing_ = o.timing_;
    device_ = o.device_;
    event_ = o.event_;
    o.event_ = nullptr;
  }
  return *this;
}

void Event::record(const Stream& s) {
  detail::DeviceScope scope(s.device());
  if (!event_) {
    WEFT_CUDA_CHECK(
        cudaEventCreateWithFlags(&event_, timing_ ? cudaEventDefault : cudaEventDisableTiming));
    device_ = s.device();
  }
  WEFT_CHECK(device_ == s.device(), "Event: recorded on cuda:", device_,
             ", cannot record it on a stream of cuda:", s.device());
  WEFT_CUDA_CHECK(cudaEventRecord(event_, s.handle()));
}

void Event::block(const Stream& s) const {
  if (!event_) return;  // never recorded: nothing to wait for
  detail::DeviceScope scope(s.device());
  WEFT_CUDA_CHECK(cudaStreamWaitEvent(s.handle(), event_, 0));
}

bool Event::query() const {
  if (!event_) return true;
  detail::DeviceScope scope(device_);
  const cudaError_t e = cudaEventQuery(event_);
  if (e == cudaErrorNotReady) return false;
  WEFT_CUDA_CHECK(e);
  return true;
}

void Event::synchronize() const {
  if (!event_) return;
  detail::DeviceScope scope(device_);
  WEFT_CUDA_CHECK(cudaEventSynchronize(event_));
}

float Event::elapsed_time(const Event& end) const {
  WEFT_CHECK(timing_ && end.timing_, "Event::elapsed_time needs events made with enable_timing");
  WEFT_CHECK(event_ && end.event_, "Event::elapsed_time: both events must have been recorded");
  float ms = 0;
  detail::DeviceScope scope(device_);
  WEFT_CUDA_CHECK(cudaEventElapsedTime(&ms, event_, end.event_));
  return ms;
}

}  // namespace weft::cuda
