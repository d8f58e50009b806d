// Learning-rate schedulers, stepped once per epoch after optimizer.step(): StepLR and
// CosineAnnealingLR (closed form; it rises again past T_max, as PyTorch's does).
#pragma once

#include "weft/optim/optimizer.h"

namespace weft::optim {

class LRScheduler {
 public:
  explicit LRScheduler(Optimizer& opt);
  virtual ~LRScheduler() = default;
  void step();
  int64_t last_epoch() const { return last_epoch_; }
  void set_last_epoch(int64_t e);  // for resume: re-applies the lr of epoch e
  std::vector<double> get_last_lr() const;

 protected:
  virtual double lr_at(double base_lr, int64_t epoch) const = 0;
  Optimizer& opt_;
  std::vector<double> base_lrs_;
  int64_t last_epoch_ = 0;
};

class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& opt, int64_t step_size, double gamma = 0.1);

 protected:
  double lr_at(double base_lr, int64_t epoch) const override;
  int64_t step_size_;
  double gamma_;
};

class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& opt, int64_t T_max, double eta_min = 0.0);

 protected:
  double lr_at(double base_lr, int64_t epoch) const override;
  int64_t T_max_;
  double eta_min_;
};

}  // namespace weft::optim
