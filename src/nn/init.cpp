#include "weft/nn/init.h"

#include <cmath>

#include "weft/autograd.h"
#include "weft/ops.h"

namespace weft::nn::init {

std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& t) {
  WEFT_CHECK(t.dim() >= 2, "fan in and fan out need a tensor of at least 2 dims, got ", t.str());
  int64_t receptive = 1;
  for (int64_t i = 2; i < t.dim(); ++i) receptive *= t.size(i);
  return {t.size(1) * receptive, t.size(0) * receptive};
}

void uniform_(Tensor t, double low, double high) {
  NoGradGuard ng;
  Tensor d = t.detach();
  weft::uniform_(d, low, high);
}

void normal_(Tensor t, double mean, double std) {
  NoGradGuard ng;
  Tensor d = t.detach();
  weft::normal_(d, mean, std);
}

void constant_(Tensor t, double value) {
  NoGradGuard ng;
  t.detach().fill_(value);
}

void kaiming_uniform_(Tensor t, double a, bool fan_in_mode) {
  auto [fi, fo] = calculate_fan_in_and_fan_out(t);
  double gain = std::sqrt(2.0 / (1.0 + a * a));
  double bound = gain * std::sqrt(3.0 / (double)(fan_in_mode ? fi : fo));
  init::uniform_(t, -bound, bound);
}

void kaiming_normal_(Tensor t, double a, bool fan_in_mode) {
  auto [fi, fo] = calculate_fan_in_and_fan_out(t);
  double gain = std::sqrt(2.0 / (1.0 + a * a));
  init::normal_(t, 0.0, gain / std::sqrt((double)(fan_in_mode ? fi : fo)));
}

void xavier_uniform_(Tensor t, double gain) {
  auto [fi, fo] = calculate_fan_in_and_fan_out(t);
  double bound = gain * std::sqrt(6.0 / (double)(fi + fo));
  init::uniform_(t, -bound, bound);
}

}  // namespace weft::nn::init
