// The CUDA caching allocator (one BlockPool per device over cudaMalloc) and the pinned host
// memory allocator, plus their public statistics in weft/cuda.h.
#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cuda/allocator.h"
#include "cuda/caching_allocator_core.h"
#include "cuda/cuda_check.h"

namespace weft::cuda {

namespace detail {

namespace {

constexpr int kMaxDevices = 64;

class CudaRaw : public RawAllocator {
 public:
  explicit CudaRaw(int device) : device_(device) {}
  void* malloc(size_t bytes) override {
    DeviceScope scope(device_);
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not sticky: the pool frees its cache and retries
      return nullptr;
    }
    WEFT_CUDA_CHECK(e);
    return p;
  }
  void free(void* ptr) override {
    DeviceScope scope(device_);
    WEFT_CUDA_CHECK(cudaFree(ptr));
  }
  EventId record_event(StreamId stream) override {
    DeviceScope scope(device_);
    cudaEvent_t ev = nullptr;
    WEFT_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    WEFT_CUDA_CHECK(cudaEventRecord(ev, static_cast<cudaStream_t>(stream)));
    return ev;
  }
  bool event_done(EventId event) override {
    DeviceScope scope(device_);  // the query would otherwise make a context on the current GPU
    const cudaError_t e = cudaEventQuery(static_cast<cudaEvent_t>(event));
    if (e == cudaErrorNotReady) return false;
    WEFT_CUDA_CHECK(e);
    return true;
  }
  void wait_event(EventId event) override {
    DeviceScope scope(device_);
    WEFT_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event)));
  }
  // Needs no current device, and runs from destructors: must not throw.
  void destroy_event(EventId event) override { cudaEventDestroy(static_cast<cudaEvent_t>(event)); }

 private:
  int device_;
};

struct DevicePool {
  CudaRaw raw;
  BlockPool pool;
  explicit DevicePool(int d) : raw(d), pool(raw, "cuda:" + std::to_string(d)) {}
};

// Created on first use of each device; leaked on purpose, so that tensors destroyed during
// static destruction still find their pool.
BlockPool& pool_for(int device) {
  static std::mutex mu;
  static std::array<DevicePool*, kMaxDevices> pools{};
  WEFT_CHECK(device >= 0 && device < kMaxDevices && device < device_count(), "CUDA device ", device,
             " does not exist (device_count() is ", device_count(), ")");
  std::lock_guard<std::mutex> lock(mu);
  if (!pools[device]) pools[device] = new DevicePool(device);
  return pools[device]->pool;
}

// Pinned host blocks, cached by rounded size. A freed block waits for the events recorded by
// the async copies that used it before it is handed out again.
struct PinnedBlock {
  size_t size;
  bool allocated = true;
  std::vector<std::pair<int, cudaEvent_t>> events;  // device, event
};

struct PinnedCache {
  std::mutex mu;
  std::unordered_map<void*, PinnedBlock> blocks;
  std::multimap<size_t, void*> free_by_size;
  std::vector<void*> waiting;  // freed, events outstanding
};

PinnedCache& pinned() {
  static PinnedCache* c = new PinnedCache();
  return *c;
}

size_t pinned_round(size_t n) {
  size_t p = 512;
  while (p < n) p <<= 1;
  return p;
}

// Destroys the block's completed events (every one, not only a leading run: events on several
// streams complete out of order); true when none is outstanding.
bool events_done(PinnedBlock& b) {
  for (size_t i = 0; i < b.events.size();) {
    cudaError_t e;
    {
      DeviceScope scope(b.events[i].first);  // the event's device, not whichever is current
      e = cudaEventQuery(b.events[i].second);
    }
    if (e == cudaErrorNotReady) {
      ++i;
      continue;
    }
    WEFT_CUDA_CHECK(e);
    cudaEventDestroy(b.events[i].second);
    b.events.erase(b.events.begin() + (ptrdiff_t)i);
  }
  return b.events.empty();
}

}  // namespace

void* device_alloc(size_t nbytes, int device) {
  return pool_for(device).allocate(nbytes, current_stream(device).handle());
}

void device_free(void* ptr, int device) { pool_for(device).free(ptr); }

void device_record_stream(void* ptr, int device, const Stream& s) {
  pool_for(device).record_stream(ptr, s.handle());
}

void* pinned_alloc(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  WEFT_CHECK(is_available(), "pinned memory needs a CUDA device (none is available)");
  const size_t size = pinned_round(nbytes);
  PinnedCache& c = pinned();
  std::lock_guard<std::mutex> lock(c.mu);
  for (size_t i = 0; i < c.waiting.size();) {
    void* p = c.waiting[i];
    if (events_done(c.blocks.at(p))) {
      c.free_by_size.emplace(c.blocks.at(p).size, p);
      c.waiting.erase(c.waiting.begin() + (ptrdiff_t)i);
    } else {
      ++i;
    }
  }
  auto it = c.free_by_size.find(size);
  if (it != c.free_by_size.end()) {
    void* p = it->second;
    c.free_by_size.erase(it);
    c.blocks.at(p).allocated = true;
    return p;
  }
  void* p = nullptr;
  // On a device that already has a context: a thread that never chose one (a DataLoader
  // worker) would otherwise make a context on GPU 0 in every process. Portable: pinned for
  // every device's context, whichever allocated it.
  int device = 0;
  for (int d = 0; d < device_count(); ++d)
    if (entered(d)) {
      device = d;
      break;
    }
  DeviceScope scope(device);
  WEFT_CUDA_CHECK(cudaHostAlloc(&p, size, cudaHostAllocPortable));
  c.blocks.emplace(p, PinnedBlock{size, true, {}});
  return p;
}

void pinned_free(void* ptr) {
  if (!ptr) return;
  PinnedCache& c = pinned();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.blocks.find(ptr);
  WEFT_CHECK(it != c.blocks.end() && it->second.allocated,
             "pinned_free: not a live pinned allocation");
  it->second.allocated = false;
  if (it->second.events.empty())
    c.free_by_size.emplace(it->second.size, ptr);
  else
    c.waiting.push_back(ptr);
}

void pinned_record_use(void* ptr, const Stream& s) {
  PinnedCache& c = pinned();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.blocks.find(ptr);
  WEFT_CHECK(it != c.blocks.end(), "pinned_record_use: not a pinned allocation");
  // Drop the events of copies already done first: a pinned buffer that stays allocated and
  // feeds a non_blocking copy every step would otherwise hold one CUDA event per step.
  events_done(it->second);
  DeviceScope scope(s.device());
  cudaEvent_t ev = nullptr;
  WEFT_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  WEFT_CUDA_CHECK(cudaEventRecord(ev, s.handle()));
  it->second.events.emplace_back(s.device(), ev);
}

bool is_pinned_ptr(const void* ptr) {
  PinnedCache& c = pinned();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.blocks.find(const_cast<void*>(ptr));
  return it != c.blocks.end() && it->second.allocated;
}

}  // namespace detail

namespace {
int resolve(int device) { return device < 0 ? current_device() : device; }
}  // namespace

MemoryStats memory_stats(int device) {
  const detail::PoolStats s = detail::pool_for(resolve(device)).stats();
  return {s.allocated,   s.peak_allocated, s.reserved, s.reserved - s.allocated,
          s.raw_mallocs, s.raw_frees};
}

void reset_peak_memory_stats(int device) { detail::pool_for(resolve(device)).reset_peak(); }

void empty_cache() {
  for (int d = 0; d < device_count(); ++d) detail::pool_for(d).empty_cache();
}

void record_stream(const Tensor& t, const Stream& s) {
  WEFT_CHECK(t.defined() && t.device().is_cuda(), "record_stream needs a CUDA tensor, got ",
             t.defined() ? t.device().str() : std::string("an undefined tensor"));
  WEFT_CHECK(t.device().index == s.device(), "record_stream: tensor on ", t.device(),
             ", stream on cuda:", s.device());
  detail::device_record_stream(t.impl()->storage->data, s.device(), s);
}

}  // namespace weft::cuda
