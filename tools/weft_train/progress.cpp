#include "progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace weft_train {

namespace {

// Under weft-run stdout is a pipe; weft-run says when its own output is a terminal, and then
// passes the '\r' redraws through (tools/weft_run/group.cpp).
bool terminal_behind_launcher() {
  const char* v = std::getenv("WEFT_STDOUT_IS_TTY");
  return v && std::string(v) == "1";
}

}  // namespace

Progress::Progress(bool enabled, int epoch, int epochs, int64_t steps)
    : tty_(enabled && (isatty(STDOUT_FILENO) || terminal_behind_launcher())),
      epoch_(epoch),
      epochs_(epochs),
      steps_(steps),
      t0_(std::chrono::steady_clock::now()) {}

void Progress::update(int64_t step, double running_loss, int64_t images, double lr) {
  if (!tty_) {
    // Plain lines: about four per epoch.
    int64_t every = std::max<int64_t>(1, steps_ / 4);
    if (step % every != 0 && step != steps_) return;
  }
  double secs = elapsed();
  double ips = images / std::max(secs, 1e-9);
  double eta = step ? secs * (double)(steps_ - step) / (double)step : 0;
  const int width = 30;
  int filled = (int)(width * step / std::max<int64_t>(steps_, 1));
  std::string bar(filled, '#');
  bar += std::string(width - filled, '.');
  if (tty_) {
    std::printf("\repoch %d/%d [%s] %lld/%lld loss %.4f lr %.4g %.0f img/s ETA %.0fs   ", epoch_,
                epochs_, bar.c_str(), (long long)step, (long long)steps_, running_loss, lr, ips,
                eta);
  } else {
    std::printf("epoch %d/%d step %lld/%lld loss %.4f lr %.9g %.0f img/s ETA %.0fs\n", epoch_,
                epochs_, (long long)step, (long long)steps_, running_loss, lr, ips, eta);
  }
  std::fflush(stdout);
}

void Progress::finish() {
  if (tty_) std::printf("\n");
}

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
}

}  // namespace weft_train
