// Internal to the CUDA backend: one library handle (cuBLAS, cuDNN) per thread and device,
// recycled through a process-wide pool when its thread ends. DataParallel runs its replicas on
// new threads every step; without the pool each would create a handle (device allocations) and
// leak it. Pooled handles are never destroyed: destroying them at exit could race the CUDA
// runtime's own teardown, and the driver reclaims them.
#pragma once

#include <mutex>
#include <unordered_map>
#include <vector>

namespace weft::cuda::detail {

template <typename Handle>
struct HandlePool {
  std::mutex mu;
  std::unordered_map<int, std::vector<Handle>> free;
  static HandlePool& get() {
    static HandlePool* p = new HandlePool();  // leaked: thread_local destructors at exit use it
    return *p;
  }
};

// This thread's handle for `device`, from the pool or from create(&handle).
template <typename Handle, typename Create>
Handle thread_handle(int device, Create&& create) {
  struct Mine {
    std::unordered_map<int, Handle> by_device;
    ~Mine() {
      HandlePool<Handle>& p = HandlePool<Handle>::get();
      std::lock_guard<std::mutex> lock(p.mu);
      for (const auto& [d, h] : by_device) p.free[d].push_back(h);
    }
  };
  thread_local Mine mine;
  auto it = mine.by_device.find(device);
  if (it != mine.by_device.end()) return it->second;
  Handle h{};
  {
    HandlePool<Handle>& p = HandlePool<Handle>::get();
    std::lock_guard<std::mutex> lock(p.mu);
    std::vector<Handle>& v = p.free[device];
    if (!v.empty()) {
      h = v.back();
      v.pop_back();
    }
  }
  if (!h) create(&h);
  mine.by_device.emplace(device, h);
  return h;
}

}  // namespace weft::cuda::detail
