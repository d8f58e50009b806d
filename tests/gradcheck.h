// Test helper: checks autograd's gradients of f(inputs) against central finite differences.
// float32 limits the precision, so inputs are small and tolerances loose (a formula error
// shows up as O(1) relative error, rounding as ~1e-3).
#pragma once

#include <gtest/gtest.h>

#include <functional>

#include "weft/autograd.h"
#include "weft/ops.h"

namespace weft::test {

inline ::testing::AssertionResult gradcheck(
    const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
    double eps = 1e-2, double tol = 2e-2) {
  for (auto& t : inputs) t = t.detach().clone().requires_grad_(true);
  Tensor out = f(inputs);
  Generator gen(123);
  Tensor w = randn(out.sizes(), &gen);  // random projection makes every output matter
  (out * w).sum().backward();
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor analytic = inputs[k].grad();
    if (!analytic.defined()) analytic = zeros(inputs[k].sizes());
    auto an = analytic.contiguous().to_vector_float();
    Tensor x = inputs[k];
    float* px = x.data_ptr<float>();
    for (int64_t i = 0; i < x.numel(); ++i) {
      NoGradGuard ng;
      float orig = px[i];
      px[i] = orig + (float)eps;
      double fp = (f(inputs) * w).sum().item<double>();
      px[i] = orig - (float)eps;
      double fm = (f(inputs) * w).sum().item<double>();
      px[i] = orig;
      double num = (fp - fm) / (2 * eps);
      double err = std::fabs(num - an[i]) / std::max(1.0, std::fabs(num));
      if (err > tol)
        return ::testing::AssertionFailure() << "input " << k << " element " << i << ": numeric "
                                             << num << " vs autograd " << an[i];
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace weft::test
