// Where a tensor's memory lives. CPU today (an index lets DataParallel treat threads as
// separate CPU "devices"); CUDA(i) has its slot so the GPU backend slots in behind the
// same type. Devices compare by type and index.
#pragma once

#include <ostream>
#include <string>

namespace weft {

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static Device CPU(int index = 0) { return {DeviceType::CPU, index}; }
  static Device CUDA(int index = 0) { return {DeviceType::CUDA, index}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device&) const = default;
  std::string str() const {
    return std::string(type == DeviceType::CPU ? "cpu" : "cuda") + ":" + std::to_string(index);
  }
};

inline std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.str(); }

// The thread's current device: where factories put tensors when no device is given (as
// CUDA's current device in PyTorch). DataParallel replicas and the backward engine's
// per-device workers set it, so that kernels' temporaries land on the right device.
Device current_device();
class DeviceGuard {
 public:
  explicit DeviceGuard(Device d);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  Device prev_;
};

}  // namespace weft
