// CPU kernels of amp::GradScaler (ops/stubs/amp.h): the unscale-and-check pass over each
// gradient, split across threads, and the scale update on the host.
#include "ops/stubs/amp.h"

#include <atomic>
#include <cmath>

#include "ops/cpu/parallel.h"

namespace weft::cpu {

namespace {

// found_inf[0] = 1 if any element of a gradient is inf/NaN (tested before scaling, as PyTorch),
// then g *= inv_scale. The multiply is skipped at inv_scale == 1, also as PyTorch.
void non_finite_check_and_unscale(const std::vector<Tensor>& grads, const Tensor& found_inf,
                                  const Tensor& inv_scale) {
  const float inv = inv_scale.data_ptr<float>()[0];
  std::atomic<bool> bad{false};
  for (const Tensor& g : grads) {
    float* p = g.data_ptr<float>();
    cpu::parallel_for(0, g.numel(), 4 * cpu::kGrainSize, [&](int64_t b, int64_t e) {
      bool local = false;
      for (int64_t i = b; i < e; ++i) {
        const float v = p[i];
        local |= !std::isfinite(v);
        p[i] = inv == 1.0f ? v : v * inv;
      }
      if (local) bad.store(true, std::memory_order_relaxed);
    });
  }
  if (bad.load()) found_inf.data_ptr<float>()[0] = 1.0f;
}

void update_scale(const Tensor& scale, const Tensor& growth_tracker, const Tensor& found_inf,
                  double growth_factor, double backoff_factor, int64_t growth_interval) {
  float* s = scale.data_ptr<float>();
  int64_t* tracker = growth_tracker.data_ptr<int64_t>();
  if (found_inf.data_ptr<float>()[0] != 0.0f) {
    s[0] = (float)(s[0] * backoff_factor);
    tracker[0] = 0;
    return;
  }
  const int64_t successful = tracker[0] + 1;
  if (successful == growth_interval) {
    const float grown = (float)(s[0] * growth_factor);
    if (std::isfinite(grown)) s[0] = grown;  // a scale that overflowed float keeps its value
    tracker[0] = 0;
  } else {
    tracker[0] = successful;
  }
}

}  // namespace

WEFT_REGISTER_DISPATCH(ops::amp_unscale_stub, CPU, &non_finite_check_and_unscale);
WEFT_REGISTER_DISPATCH(ops::amp_update_scale_stub, CPU, &update_scale);

}  // namespace weft::cpu
