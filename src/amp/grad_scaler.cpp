// GradScaler (torch.amp.GradScaler's algorithm): the per-device unscale-and-check and the scale
// update run where the gradients live (the device's kernels, ops/stubs/amp.h), so the CUDA path
// queues kernels and only step() reads a flag back. Under DistributedDataParallel the gradients are
// already all-reduced when step() sees them and an inf/NaN on any rank reaches every rank, so all
// ranks skip the same steps.
#include "weft/amp/grad_scaler.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "ops/stubs/amp.h"
#include "weft/autograd.h"
#include "weft/ops.h"

namespace weft::amp {

namespace {

double parse_number(const std::map<std::string, std::string>& state, const std::string& key) {
  auto it = state.find(key);
  WEFT_CHECK(it != state.end(), "GradScaler.load_state_dict: the state has no '", key, "' entry");
  char* end = nullptr;
  const double v = std::strtod(it->second.c_str(), &end);
  WEFT_CHECK(!it->second.empty() && end && *end == '\0', "GradScaler.load_state_dict: '", key,
             "' is not a number: '", it->second, "'");
  return v;
}

std::string number_str(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

GradScaler::GradScaler(GradScalerOptions options) : options_(options) {
  if (!options_.enabled) return;
  WEFT_CHECK(options_.init_scale > 0 && std::isfinite(options_.init_scale),
             "GradScaler: init_scale must be a positive finite number, got ", options_.init_scale);
  WEFT_CHECK(options_.growth_factor > 1.0, "GradScaler: growth_factor should be > 1, got ",
             options_.growth_factor);
  WEFT_CHECK(options_.backoff_factor > 0.0 && options_.backoff_factor < 1.0,
             "GradScaler: backoff_factor should be in (0, 1), got ", options_.backoff_factor);
  WEFT_CHECK(options_.growth_interval > 0,
             "GradScaler: growth_interval should be a positive integer, got ",
             options_.growth_interval);
}

void GradScaler::lazy_init(Device device) {
  if (scale_.defined()) return;
  scale_ = full({1}, options_.init_scale, {.device = device});
  growth_tracker_ = full({1}, (double)init_growth_tracker_, {.dtype = kInt64, .device = device});
}

Tensor GradScaler::scale(const Tensor& outputs) {
  if (!options_.enabled) return outputs;
  WEFT_CHECK(outputs.dtype() == kFloat32, "GradScaler.scale: expected a float32 loss, got ",
             outputs.str());
  lazy_init(outputs.device());
  // A 0-dim factor keeps the loss's shape (PyTorch's [1] scale turns a 0-dim loss into [1]).
  return outputs * scale_.to(outputs.device(), /*non_blocking=*/true).reshape({});
}

void GradScaler::unscale_(optim::Optimizer& optimizer) {
  if (!options_.enabled) return;
  PerOptimizer& st = per_optimizer_[&optimizer];
  WEFT_CHECK(st.stage != Stage::Unscaled,
             "GradScaler.unscale_() has already been called on this optimizer since the last "
             "update()");
  WEFT_CHECK(st.stage != Stage::Stepped, "GradScaler.unscale_() is being called after step()");
  WEFT_CHECK(scale_.defined(),
             "GradScaler.unscale_: no loss was scaled yet (call scale(loss).backward() first)");
  NoGradGuard ng;
  // 1/scale in double, then float: PyTorch's reciprocal of the scale.
  const Tensor inv_scale = full({1}, 1.0 / scale_.item<double>(), {.device = scale_.device()});
  // Gradients grouped by device, in parameter order; one flag per device.
  std::vector<std::pair<Device, std::vector<Tensor>>> by_device;
  for (auto& group : optimizer.param_groups())
    for (auto& p : group.params) {
      const Tensor& g = p.grad();
      if (!g.defined()) continue;
      WEFT_CHECK(g.dtype() == kFloat32 && g.is_contiguous(),
                 "GradScaler.unscale_: gradients must be contiguous float32, got ", g.str());
      auto it = by_device.begin();
      while (it != by_device.end() && it->first != g.device()) ++it;
      if (it == by_device.end()) it = by_device.insert(it, {g.device(), {}});
      g.bump_version();  // unscaled in place
      it->second.push_back(g);
    }
  st.found_inf.clear();
  for (auto& [device, grads] : by_device) {
    Tensor found = zeros({1}, {.device = device});
    Tensor inv = inv_scale.to(device);
    ops::amp_unscale_stub(device, grads, found, inv);
    st.found_inf.push_back(found);
  }
  if (st.found_inf.empty()) st.found_inf.push_back(zeros({1}, {.device = scale_.device()}));
  st.stage = Stage::Unscaled;
}

bool GradScaler::step(optim::Optimizer& optimizer) {
  if (!options_.enabled) {
    optimizer.step();
    return true;
  }
  PerOptimizer& st = per_optimizer_[&optimizer];
  WEFT_CHECK(st.stage != Stage::Stepped,
             "GradScaler.step() has already been called since the last update()");
  if (st.stage == Stage::Ready) unscale_(optimizer);
  double found = 0;
  for (const Tensor& f : st.found_inf) found += f.item<double>();
  const bool take = found == 0;
  if (take) optimizer.step();
  st.stage = Stage::Stepped;
  return take;
}

void GradScaler::update(std::optional<double> new_scale) {
  if (!options_.enabled) return;
  WEFT_CHECK(scale_.defined(), "GradScaler.update: no loss was scaled yet");
  NoGradGuard ng;
  if (new_scale) {
    WEFT_CHECK(*new_scale > 0 && std::isfinite(*new_scale),
               "GradScaler.update: new_scale must be a positive finite number, got ", *new_scale);
    scale_.fill_(*new_scale);
  } else {
    Tensor found = zeros({1}, {.device = scale_.device()});
    bool any = false;
    for (auto& [opt, st] : per_optimizer_)
      for (const Tensor& f : st.found_inf) {
        found.add_(f.to(scale_.device()));
        any = true;
      }
    WEFT_CHECK(any,
               "GradScaler.update: no inf checks were recorded prior to update() (call "
               "step() or unscale_() first)");
    ops::amp_update_scale_stub(scale_.device(), scale_, growth_tracker_, found,
                               options_.growth_factor, options_.backoff_factor,
                               options_.growth_interval);
  }
  per_optimizer_.clear();
}

double GradScaler::get_scale() const {
  if (!options_.enabled) return 1.0;
  return scale_.defined() ? scale_.item<double>() : options_.init_scale;
}

int64_t GradScaler::growth_tracker() const {
  return growth_tracker_.defined() ? growth_tracker_.item<int64_t>() : init_growth_tracker_;
}

std::map<std::string, std::string> GradScaler::state_dict() const {
  if (!options_.enabled) return {};
  return {{"scale", number_str(get_scale())},
          {"growth_factor", number_str(options_.growth_factor)},
          {"backoff_factor", number_str(options_.backoff_factor)},
          {"growth_interval", std::to_string(options_.growth_interval)},
          {"_growth_tracker", std::to_string(growth_tracker())}};
}

void GradScaler::load_state_dict(const std::map<std::string, std::string>& state) {
  WEFT_CHECK(options_.enabled, "GradScaler.load_state_dict on a disabled GradScaler");
  WEFT_CHECK(!state.empty(),
             "GradScaler.load_state_dict: the state is empty (was it saved from a "
             "disabled GradScaler?)");
  GradScalerOptions o = options_;
  o.init_scale = parse_number(state, "scale");
  o.growth_factor = parse_number(state, "growth_factor");
  o.backoff_factor = parse_number(state, "backoff_factor");
  const double interval = parse_number(state, "growth_interval");
  const double tracker = parse_number(state, "_growth_tracker");
  WEFT_CHECK(interval == std::floor(interval) && tracker == std::floor(tracker) && tracker >= 0,
             "GradScaler.load_state_dict: growth_interval and _growth_tracker must be whole "
             "numbers, got ",
             interval, " and ", tracker);
  o.growth_interval = (int64_t)interval;
  GradScaler checked(o);  // the constructor's range checks name a bad value
  options_ = o;
  init_growth_tracker_ = (int64_t)tracker;
  if (scale_.defined()) {
    NoGradGuard ng;
    scale_.fill_(o.init_scale);
    growth_tracker_.fill_(tracker);
  }
}

}  // namespace weft::amp
