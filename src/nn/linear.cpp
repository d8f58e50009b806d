#include "weft/nn/linear.h"

#include <cmath>

#include "weft/nn/functional.h"
#include "weft/nn/init.h"
#include "weft/ops.h"

namespace weft::nn {

LinearImpl::LinearImpl(int64_t in, int64_t out, bool bias)
    : Cloneable("Linear"), in_features(in), out_features(out), has_bias(bias) {
  WEFT_CHECK(in >= 0 && out >= 0, "Linear: negative features (", in, ", ", out, ")");
  reset();
}

void LinearImpl::reset() {
  weight = register_parameter("weight", empty({out_features, in_features}));
  // kaiming_uniform_(a=sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  double bound = in_features > 0 ? 1.0 / std::sqrt((double)in_features) : 0.0;
  init::uniform_(weight, -bound, bound);
  if (has_bias) {
    bias = register_parameter("bias", empty({out_features}));
    init::uniform_(bias, -bound, bound);
  } else {
    bias = Tensor();
  }
}

Tensor LinearImpl::forward(const Tensor& input) { return functional::linear(input, weight, bias); }

std::string LinearImpl::extra_repr() const {
  return "in_features=" + std::to_string(in_features) +
         ", out_features=" + std::to_string(out_features) +
         ", bias=" + (has_bias ? "True" : "False");
}

}  // namespace weft::nn
