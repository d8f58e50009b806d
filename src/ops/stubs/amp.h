// The kernels of amp::GradScaler (PyTorch's _amp_foreach_non_finite_check_and_unscale_ and
// _amp_update_scale_; Note [Device dispatch] in docs/ARCHITECTURE.md). Guarantees: both read and
// write their flags and scale where the tensors live, so a device's step never waits for the host.
#pragma once

#include <vector>

#include "ops/dispatch.h"
#include "weft/tensor.h"

namespace weft::ops {

// found_inf[0] = 1 if any element of the grads (contiguous float32 on one device) is inf/NaN,
// tested before scaling; then each grad *= inv_scale[0] (skipped at 1, as PyTorch).
using AmpUnscaleFn = void (*)(const std::vector<Tensor>& grads, const Tensor& found_inf,
                              const Tensor& inv_scale);
WEFT_DECLARE_DISPATCH(AmpUnscaleFn, amp_unscale_stub);
// scale (float32 [1]) and growth_tracker (int64 [1]) updated from found_inf as
// GradScaler.update: backoff on an inf/NaN, growth after growth_interval clean steps.
using AmpUpdateScaleFn = void (*)(const Tensor& scale, const Tensor& growth_tracker,
                                  const Tensor& found_inf, double growth_factor,
                                  double backoff_factor, int64_t growth_interval);
WEFT_DECLARE_DISPATCH(AmpUpdateScaleFn, amp_update_scale_stub);

}  // namespace weft::ops
