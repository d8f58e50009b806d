// Parameter initialisations (torch.nn.init), drawing from weft's default generator.
// fan_in/fan_out follow PyTorch: for a conv weight [K, C, kh, kw], fan_in = C*kh*kw.
#pragma once

#include "weft/tensor.h"

namespace weft::nn::init {

std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& t);
void uniform_(Tensor t, double low, double high);
void normal_(Tensor t, double mean, double std);
void constant_(Tensor t, double value);
inline void zeros_(Tensor t) { constant_(t, 0.0); }
inline void ones_(Tensor t) { constant_(t, 1.0); }
// gain for leaky_relu with slope a: sqrt(2 / (1 + a^2)); bound = gain * sqrt(3 / fan_in).
void kaiming_uniform_(Tensor t, double a = 0.0, bool fan_in_mode = true);
void kaiming_normal_(Tensor t, double a = 0.0, bool fan_in_mode = true);
void xavier_uniform_(Tensor t, double gain = 1.0);

}  // namespace weft::nn::init
