// torch.autocast: inside a region, the ops PyTorch lists as safe in lower precision (mm, matmul,
// linear, conv2d) cast their floating inputs to the region's bf16/fp16, and the ops it lists as
// needing float32 (the losses; on CUDA also exp, log, pow, softmax, log_softmax and sum) cast
// theirs to float32. Other ops run in their inputs' dtype. Regions are per thread and per device
// type and nest; backward passes run without autocast (each op's backward keeps its forward's
// dtypes). Casts of leaves that require grad (weights) are cached until the outermost region
// exits, so a weight used twice in a forward is cast once.
#pragma once

#include <optional>

#include "weft/tensor.h"

namespace weft::amp {

class autocast {
 public:
  // dtype defaults to PyTorch's: float16 on CUDA, bfloat16 on the CPU.
  explicit autocast(DeviceType device_type, std::optional<DType> dtype = std::nullopt,
                    bool enabled = true);
  ~autocast();
  autocast(const autocast&) = delete;
  autocast& operator=(const autocast&) = delete;

 private:
  DeviceType type_;
  bool prev_enabled_;
  DType prev_dtype_;
};

bool is_autocast_enabled(DeviceType type);
DType get_autocast_dtype(DeviceType type);
void clear_autocast_cache();

// The ops' side. An op listed for autocast asks `autocast_active` for its first tensor's device;
// when true it casts every tensor argument with `autocast_cast` and calls itself again under an
// AutocastSuspend, so that the calls inside it run as written.
enum class CastPolicy { LowerPrecision, Float32 };
bool autocast_active(const Tensor& t);
Tensor autocast_cast(const Tensor& t, CastPolicy policy);
inline Tensor autocast_lower_precision(const Tensor& t) {
  return autocast_cast(t, CastPolicy::LowerPrecision);
}
// CUDA's float32 list beyond the losses (exp, log, pow, softmax, log_softmax, sum): true when `t`
// is a 16-bit float CUDA tensor inside a CUDA region, and the op should run on t.to(float32).
bool autocast_to_float32_on_cuda(const Tensor& t);

// Turns autocast off on this thread for its lifetime (inside autocast ops and backward passes).
class AutocastSuspend {
 public:
  AutocastSuspend();
  ~AutocastSuspend();
  AutocastSuspend(const AutocastSuspend&) = delete;
  AutocastSuspend& operator=(const AutocastSuspend&) = delete;

 private:
  bool prev_;
};

// The thread's whole autocast state, for handing to worker threads (DataParallel's replicas run
// under their caller's regions, as PyTorch's parallel_apply re-enters autocast in each thread).
struct AutocastState {
  bool enabled[2] = {false, false};  // by DeviceType
  DType dtype[2] = {DType::BFloat16, DType::Float16};
};
AutocastState autocast_state();
void set_autocast_state(const AutocastState& state);

}  // namespace weft::amp
