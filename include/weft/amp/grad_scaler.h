// GradScaler: dynamic loss scaling as torch.amp.GradScaler. scale() multiplies the loss so that
// small gradients survive half-precision backward; step() unscales the gradients, skips the
// optimizer step when any is inf/NaN, and update() backs the scale off after an overflow or grows
// it after growth_interval clean steps. The scale and the overflow flags live on the gradients'
// device: on CUDA the only host synchronisation is step()'s read of the overflow flag.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <unordered_map>

#include "weft/optim/optimizer.h"
#include "weft/tensor.h"

namespace weft::amp {

struct GradScalerOptions {
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  bool enabled = true;
};

class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions options = {});

  // outputs * scale, differentiable (a no-op when disabled).
  Tensor scale(const Tensor& outputs);
  // Divides the optimizer's gradients by the scale in place and records whether any was
  // inf/NaN. At most once per optimizer between update()s, and not after step().
  void unscale_(optim::Optimizer& optimizer);
  // unscale_ (unless already called), then optimizer.step() only if every gradient was finite.
  // Returns whether the step was taken.
  bool step(optim::Optimizer& optimizer);
  // Backs off or grows the scale from this iteration's overflow flags (or sets new_scale) and
  // starts the next iteration.
  void update(std::optional<double> new_scale = std::nullopt);

  double get_scale() const;
  int64_t growth_tracker() const;
  bool is_enabled() const { return options_.enabled; }
  const GradScalerOptions& options() const { return options_; }

  // PyTorch's keys: scale, growth_factor, backoff_factor, growth_interval, _growth_tracker;
  // values as decimal strings so they fit a safetensors file's metadata. Empty when disabled.
  std::map<std::string, std::string> state_dict() const;
  void load_state_dict(const std::map<std::string, std::string>& state);

 private:
  enum class Stage { Ready, Unscaled, Stepped };
  struct PerOptimizer {
    Stage stage = Stage::Ready;
    std::vector<Tensor> found_inf;  // one float flag per device holding gradients
  };
  void lazy_init(Device device);

  GradScalerOptions options_;
  int64_t init_growth_tracker_ = 0;  // a loaded state's tracker, until the first scale()
  Tensor scale_;                     // float32 [1] on the device of the first scaled output
  Tensor growth_tracker_;            // int64 [1], same device
  std::unordered_map<const optim::Optimizer*, PerOptimizer> per_optimizer_;
};

}  // namespace weft::amp
