// Test helper: loads tests/golden/<case>.safetensors (written by scripts/make_golden.py
// from PyTorch) and compares weft's tensors against it.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "weft/ops.h"
#include "weft/serialize.h"

namespace weft::test {

struct Golden {
  explicit Golden(const std::string& name) : name(name) {
    tensors =
        load(std::string(WEFT_GOLDEN_DIR) + "/" + name + ".safetensors", Device::CPU(), &meta);
  }
  Tensor operator[](const std::string& key) const {
    const Tensor* t = tensors.find(key);
    if (!t) throw std::runtime_error("golden " + name + " has no tensor '" + key + "'");
    return *t;
  }
  bool has(const std::string& key) const { return tensors.contains(key); }
  // The module's initial state: every "param.<key>" tensor under <key>, for load_state_dict.
  TensorDict params() const {
    TensorDict sd;
    for (const auto& [k, t] : tensors)
      if (k.rfind("param.", 0) == 0) sd.insert(k.substr(6), t);
    return sd;
  }
  // An input as a fresh leaf (requires grad when it is float).
  Tensor input(int i, bool requires_grad = true) const {
    Tensor t = (*this)["in." + std::to_string(i)].clone();
    if (requires_grad && t.dtype() == kFloat32) t.requires_grad_(true);
    return t;
  }
  std::string name;
  TensorDict tensors;
  std::map<std::string, std::string> meta;
};

// Within rtol relative, with an absolute floor of rtol * 0.1 for values near zero.
inline ::testing::AssertionResult close(const Tensor& actual, const Tensor& expected, double rtol,
                                        const std::string& what = "") {
  if (!actual.defined()) return ::testing::AssertionFailure() << what << ": result is undefined";
  if (actual.sizes() != expected.sizes())
    return ::testing::AssertionFailure() << what << ": shape " << shape_str(actual.sizes())
                                         << " vs expected " << shape_str(expected.sizes());
  double r = max_rel_diff(actual, expected, rtol, rtol * 0.1);
  if (r <= 1.0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": max relative error " << r * rtol << " exceeds " << rtol
         << "\nactual:   " << actual << "\nexpected: " << expected;
}

constexpr double kRtol = 1e-5;
constexpr double kConvRtol = 1e-4;

}  // namespace weft::test
