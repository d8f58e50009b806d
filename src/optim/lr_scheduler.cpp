// StepLR and CosineAnnealingLR in closed form: the lr of epoch e depends only on e and the
// base lrs, so set_last_epoch() restores a resumed run's schedule exactly.
#include "weft/optim/lr_scheduler.h"

#include <cmath>
#include <numbers>

namespace weft::optim {

LRScheduler::LRScheduler(Optimizer& opt) : opt_(opt) {
  for (const auto& g : opt_.param_groups()) base_lrs_.push_back(g.options.lr);
}

void LRScheduler::set_last_epoch(int64_t e) {
  WEFT_CHECK(e >= 0, "LRScheduler: epoch ", e, " is negative");
  auto& groups = opt_.param_groups();
  WEFT_CHECK(groups.size() == base_lrs_.size(), "LRScheduler: the optimizer has ", groups.size(),
             " parameter groups but the scheduler was made for ", base_lrs_.size());
  last_epoch_ = e;
  for (size_t g = 0; g < groups.size(); ++g) groups[g].options.lr = lr_at(base_lrs_[g], e);
}

void LRScheduler::step() { set_last_epoch(last_epoch_ + 1); }

std::vector<double> LRScheduler::get_last_lr() const {
  std::vector<double> lrs;
  for (const auto& g : opt_.param_groups()) lrs.push_back(g.options.lr);
  return lrs;
}

StepLR::StepLR(Optimizer& opt, int64_t step_size, double gamma)
    : LRScheduler(opt), step_size_(step_size), gamma_(gamma) {
  WEFT_CHECK(step_size > 0, "StepLR: step_size must be positive, got ", step_size);
}

double StepLR::lr_at(double base_lr, int64_t epoch) const {
  return base_lr * std::pow(gamma_, (double)(epoch / step_size_));
}

CosineAnnealingLR::CosineAnnealingLR(Optimizer& opt, int64_t T_max, double eta_min)
    : LRScheduler(opt), T_max_(T_max), eta_min_(eta_min) {
  WEFT_CHECK(T_max > 0, "CosineAnnealingLR: T_max must be positive, got ", T_max);
}

double CosineAnnealingLR::lr_at(double base_lr, int64_t epoch) const {
  return eta_min_ + (base_lr - eta_min_) *
                        (1 + std::cos(std::numbers::pi * (double)epoch / (double)T_max_)) / 2;
}

}  // namespace weft::optim
