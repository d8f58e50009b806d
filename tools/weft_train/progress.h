// weft-train's progress line during an epoch: on a terminal one line redrawn in place (bar,
// running loss, the learning rate the step took, images/s, ETA), otherwise about four plain lines
// per epoch. Only rank 0 shows it.
#pragma once

#include <chrono>
#include <cstdint>

namespace weft_train {

class Progress {
 public:
  Progress(bool enabled, int epoch, int epochs, int64_t steps);
  void update(int64_t step, double running_loss, int64_t images, double lr);
  void finish();
  double elapsed() const;

 private:
  bool tty_;
  int epoch_, epochs_;
  int64_t steps_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace weft_train
