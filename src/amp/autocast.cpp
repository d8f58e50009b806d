// Autocast's thread-local state and its cast rules (PyTorch's at::autocast::cached_cast).
#include "weft/amp/autocast.h"

#include <unordered_map>

#include "weft/error.h"

namespace weft::amp {

namespace {

struct ThreadState {
  AutocastState s;
  bool suspended = false;
  int depth = 0;  // autocast guards alive on this thread; the cache lives while > 0
  // Keyed by the source's impl; the entry holds the source too, so the key cannot be reused.
  struct Cached {
    Tensor source, cast;
    uint32_t version;  // the source's, when cast: a weight updated in place is cast afresh
  };
  std::unordered_map<const void*, Cached> cache;
};
thread_local ThreadState t_state;

int slot(DeviceType t) { return t == DeviceType::CUDA ? 1 : 0; }

}  // namespace

autocast::autocast(DeviceType device_type, std::optional<DType> dtype, bool enabled)
    : type_(device_type),
      prev_enabled_(t_state.s.enabled[slot(device_type)]),
      prev_dtype_(t_state.s.dtype[slot(device_type)]) {
  const DType d =
      dtype.value_or(device_type == DeviceType::CUDA ? DType::Float16 : DType::BFloat16);
  WEFT_CHECK(is_reduced_float(d), "autocast: dtype must be bfloat16 or float16, got ", d);
  t_state.s.enabled[slot(type_)] = enabled;
  t_state.s.dtype[slot(type_)] = d;
  ++t_state.depth;
}

autocast::~autocast() {
  t_state.s.enabled[slot(type_)] = prev_enabled_;
  t_state.s.dtype[slot(type_)] = prev_dtype_;
  if (--t_state.depth == 0) t_state.cache.clear();
}

bool is_autocast_enabled(DeviceType type) { return t_state.s.enabled[slot(type)]; }
DType get_autocast_dtype(DeviceType type) { return t_state.s.dtype[slot(type)]; }
void clear_autocast_cache() { t_state.cache.clear(); }

bool autocast_active(const Tensor& t) {
  return !t_state.suspended && t.defined() && t_state.s.enabled[slot(t.device().type)];
}

Tensor autocast_cast(const Tensor& t, CastPolicy policy) {
  if (!t.defined() || !is_floating_point(t.dtype()) || !t_state.s.enabled[slot(t.device().type)])
    return t;
  if (policy == CastPolicy::Float32) return is_reduced_float(t.dtype()) ? t.to(kFloat32) : t;
  const DType target = t_state.s.dtype[slot(t.device().type)];
  if (t.dtype() == target) return t;
  // Only weights are worth caching: activations are cast once anyway.
  const bool cacheable = t_state.depth > 0 && t.is_leaf() && t.requires_grad();
  if (!cacheable) return t.to(target);
  auto it = t_state.cache.find(t.impl());
  if (it != t_state.cache.end() && it->second.cast.dtype() == target &&
      it->second.version == t._version())
    return it->second.cast;
  Tensor cast = t.to(target);
  t_state.cache[t.impl()] = {t, cast, t._version()};
  return cast;
}

bool autocast_to_float32_on_cuda(const Tensor& t) {
  return t.defined() && t.device().is_cuda() && is_reduced_float(t.dtype()) && autocast_active(t);
}

AutocastSuspend::AutocastSuspend() : prev_(t_state.suspended) { t_state.suspended = true; }
AutocastSuspend::~AutocastSuspend() { t_state.suspended = prev_; }

AutocastState autocast_state() { return t_state.s; }
void set_autocast_state(const AutocastState& state) { t_state.s = state; }

}  // namespace weft::amp
