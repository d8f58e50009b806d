// Turns the restricted unpickler's object graph into weft's TorchValue: storages become weft
// tensors on their device (read once each, converted to a dtype weft holds), tensors become views
// of them with the file's sizes, strides and offset, so tensors that shared a storage share memory.
#pragma once

#include <functional>
#include <map>
#include <optional>

#include "serialize/pickle/unpickler.h"
#include "weft/serialize/torch_load.h"

namespace weft::serialize {

// Fills dst with the `nbytes` little-endian bytes of a storage (its record in the file).
using ReadStorage = std::function<void(const pickle::Object& storage, uint8_t* dst, size_t nbytes)>;

class ValueBuilder {
 public:
  ValueBuilder(std::optional<Device> map_location, ReadStorage read, const pickle::Limits& limits)
      : map_location_(map_location), read_(std::move(read)), limits_(limits) {}
  TorchValue convert(const pickle::Object& root) { return value(root, 0); }

 private:
  TorchValue value(const pickle::Object& o, size_t depth);
  Tensor storage_tensor(const pickle::Object& s);
  Device device_for(const pickle::Object& s) const;

  std::optional<Device> map_location_;
  ReadStorage read_;
  const pickle::Limits& limits_;
  std::map<const pickle::Object*, Tensor> storages_;  // each storage, read once
  size_t values_ = 0;
};

}  // namespace weft::serialize
