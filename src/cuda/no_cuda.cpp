// weft::cuda (weft/cuda.h) and the device allocator (cuda/allocator.h) in a build without the
// CUDA backend, so that callers need no #ifdef: the queries answer "no devices" (no streams to
// carry across threads, nothing cached) and whatever needs a device throws weft::Error saying
// why. The CUDA build defines them in src/cuda/runtime.cpp and caching_allocator.cpp.
#include <atomic>
#include <string>

#include "cuda/allocator.h"
#include "weft/cuda.h"

namespace weft::cuda {

namespace {
std::atomic<bool> g_allow_tf32{false};

[[noreturn]] void no_backend(const std::string& what) {
  WEFT_ERROR(what, ": this build of weft has no CUDA backend (configure it where nvcc is found, ",
             "with -DWEFT_CUDA=ON)");
}
}  // namespace

bool is_built() { return false; }
bool is_available() { return false; }
int device_count() { return 0; }
void synchronize(int device) {
  WEFT_CHECK(device < 0, "synchronize(", device, "): this build of weft has no CUDA backend");
}
void set_allow_tf32(bool allow) { g_allow_tf32 = allow; }
bool allow_tf32() { return g_allow_tf32; }

int current_device() { no_backend("cuda::current_device"); }
void set_device(int device) { no_backend("cuda::set_device(" + std::to_string(device) + ")"); }

bool Stream::query() const { no_backend("Stream::query"); }
void Stream::synchronize() const { no_backend("Stream::synchronize"); }
Stream default_stream(int device) {
  no_backend("cuda::default_stream(" + std::to_string(device) + ")");
}
Stream stream_from_pool(int device, bool) {
  no_backend("cuda::stream_from_pool(" + std::to_string(device) + ")");
}
Stream current_stream(int device) {
  no_backend("cuda::current_stream(" + std::to_string(device) + ")");
}
void set_current_stream(const Stream&) { no_backend("cuda::set_current_stream"); }
std::vector<Stream> current_streams() { return {}; }
void set_current_streams(const std::vector<Stream>& streams) {
  for (const Stream& s : streams) set_current_stream(s);
}

// The constructor throws (current_stream), so no guard is ever destroyed.
StreamGuard::StreamGuard(const Stream& s) : prev_(current_stream(s.device())) {}
StreamGuard::~StreamGuard() = default;

// An event can be made but never recorded: it counts as having happened, as an unrecorded CUDA
// event does.
Event::~Event() = default;
Event::Event(Event&& o) noexcept : timing_(o.timing_), device_(o.device_), event_(o.event_) {
  o.event_ = nullptr;
}
Event& Event::operator=(Event&& o) noexcept {
  timing_ = o.timing_;
  device_ = o.device_;
  event_ = o.event_;
  o.event_ = nullptr;
  return *this;
}
void Event::record(const Stream&) { no_backend("Event::record"); }
void Event::block(const Stream&) const {}
bool Event::query() const { return true; }
void Event::synchronize() const {}
float Event::elapsed_time(const Event&) const { no_backend("Event::elapsed_time"); }

MemoryStats memory_stats(int device) {
  no_backend("cuda::memory_stats(" + std::to_string(device) + ")");
}
void reset_peak_memory_stats(int device) {
  no_backend("cuda::reset_peak_memory_stats(" + std::to_string(device) + ")");
}
void empty_cache() {}
void record_stream(const Tensor& t, const Stream&) {
  no_backend("cuda::record_stream(" + t.str() + ")");
}

namespace detail {

void* device_alloc(size_t, int device) { no_backend("device cuda:" + std::to_string(device)); }
// Nothing was ever allocated, so nothing is ever freed.
void device_free(void*, int) {}
void device_record_stream(void*, int device, const Stream&) {
  no_backend("device cuda:" + std::to_string(device));
}
void* pinned_alloc(size_t) { no_backend("pinned memory"); }
void pinned_free(void*) {}
void pinned_record_use(void*, const Stream&) { no_backend("pinned memory"); }
bool is_pinned_ptr(const void*) { return false; }

}  // namespace detail

}  // namespace weft::cuda
