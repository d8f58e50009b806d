#include "weft/nn/conv.h"

#include <cmath>
#include <sstream>

#include "weft/nn/functional.h"
#include "weft/nn/init.h"
#include "weft/ops.h"

namespace weft::nn {

Conv2dImpl::Conv2dImpl(int64_t in, int64_t out, std::array<int64_t, 2> k, Conv2dOptions o)
    : Cloneable("Conv2d"), in_channels(in), out_channels(out), kernel_size(k), options(o) {
  WEFT_CHECK(o.groups > 0 && in % o.groups == 0, "Conv2d: in_channels ", in,
             " must be divisible by groups ", o.groups);
  WEFT_CHECK(out % o.groups == 0, "Conv2d: out_channels ", out, " must be divisible by groups ",
             o.groups);
  WEFT_CHECK(k[0] > 0 && k[1] > 0, "Conv2d: kernel_size must be positive");
  reset();
}

void Conv2dImpl::reset() {
  weight = register_parameter("weight", empty({out_channels, in_channels / options.groups,
                                               kernel_size[0], kernel_size[1]}));
  init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (options.bias) {
    auto [fan_in, fan_out] = init::calculate_fan_in_and_fan_out(weight);
    double bound = fan_in > 0 ? 1.0 / std::sqrt((double)fan_in) : 0.0;
    bias = register_parameter("bias", empty({out_channels}));
    init::uniform_(bias, -bound, bound);
  } else {
    bias = Tensor();
  }
}

Tensor Conv2dImpl::forward(const Tensor& input) {
  return functional::conv2d(input, weight, bias, options.stride, options.padding, options.dilation,
                            options.groups);
}

std::string Conv2dImpl::extra_repr() const {
  std::ostringstream os;
  auto pair = [&](std::array<int64_t, 2> a) { os << "(" << a[0] << ", " << a[1] << ")"; };
  os << in_channels << ", " << out_channels << ", kernel_size=";
  pair(kernel_size);
  os << ", stride=";
  pair(options.stride);
  if (options.padding != std::array<int64_t, 2>{0, 0}) os << ", padding=", pair(options.padding);
  if (options.dilation != std::array<int64_t, 2>{1, 1}) os << ", dilation=", pair(options.dilation);
  if (options.groups != 1) os << ", groups=" << options.groups;
  if (!options.bias) os << ", bias=False";
  return os.str();
}

}  // namespace weft::nn
