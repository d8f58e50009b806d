// The module and loss goldens shared by the CPU tests (test_golden_nn.cpp) and their reruns on
// CUDA (cuda/test_cuda_nn.cpp): each golden's name with a fresh module of its configuration,
// the tolerance it is compared at and whether it runs in training mode.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "golden.h"
#include "weft/nn.h"

namespace weft::test {

struct ModuleCase {
  std::string name;
  std::function<std::shared_ptr<nn::Module>()> make;
  double rtol = kRtol;
  bool train = true;
};

// Loads the golden's parameters into `m`, moves it to `device`, runs forward (and backward
// where the golden has an upstream gradient) and compares output, buffers and gradients on
// the host.
inline void check_module(const std::string& name, nn::Module& m, double rtol = kRtol,
                         bool train = true, Device device = Device::CPU()) {
  SCOPED_TRACE(name + " on " + device.str());
  Golden g(name);
  m.load_state_dict(g.params());
  m.to(device);
  m.train(train);
  auto host = [](const Tensor& t) { return t.to(Device::CPU()); };
  Tensor x = g.input(0, false).to(device).requires_grad_(true);
  Tensor out = m.forward(x);
  ASSERT_EQ(out.device(), device);
  ASSERT_TRUE(close(host(out), g["out"], rtol, "out"));
  for (const auto& [k, t] : m.named_buffers()) {
    if (!g.has("after." + k)) continue;
    if (t.dtype() == kInt64) {
      EXPECT_EQ(t.item<int64_t>(), g["after." + k].item<int64_t>()) << k;
    } else {
      EXPECT_TRUE(close(host(t), g["after." + k], rtol, "after." + k));
    }
  }
  if (!g.has("gout")) return;
  out.backward(g["gout"].to(device));
  EXPECT_TRUE(close(host(x.grad()), g["grad.in.0"], rtol, "grad.in.0"));
  for (const auto& [k, p] : m.named_parameters())
    EXPECT_TRUE(close(host(p.grad()), g["grad.param." + k], rtol, "grad.param." + k));
}

inline std::vector<ModuleCase> module_cases() {
  using namespace weft::nn;
  return {
      {"linear", [] { return Linear(5, 3).ptr(); }},
      {"linear_nobias", [] { return Linear(5, 3, false).ptr(); }},
      {"conv2d_basic", [] { return Conv2d(3, 4, 3).ptr(); }, kConvRtol},
      {"conv2d_stride_pad",
       [] {
         return Conv2d(3, 6, 3, {.stride = {2, 2}, .padding = {1, 1}}).ptr();
       },
       kConvRtol},
      {"conv2d_dilation",
       [] {
         return Conv2d(2, 4, 3, {.padding = {2, 2}, .dilation = {2, 2}}).ptr();
       },
       kConvRtol},
      {"conv2d_groups",
       [] {
         return Conv2d(4, 6, 3, {.padding = {1, 1}, .groups = 2, .bias = false}).ptr();
       },
       kConvRtol},
      {"conv2d_depthwise",
       [] {
         return Conv2d(4, 4, 3, {.padding = {1, 1}, .groups = 4}).ptr();
       },
       kConvRtol},
      {"conv2d_1x1", [] { return Conv2d(8, 4, 1).ptr(); }, kConvRtol},
      {"conv2d_winograd",
       [] {
         return Conv2d(16, 16, 3, {.padding = {1, 1}}).ptr();
       },
       kConvRtol},
      {"batchnorm1d_train", [] { return BatchNorm1d(4).ptr(); }},
      {"batchnorm1d_3d_train", [] { return BatchNorm1d(4).ptr(); }},
      {"batchnorm2d_train", [] { return BatchNorm2d(3).ptr(); }},
      {"batchnorm2d_eval", [] { return BatchNorm2d(3).ptr(); }, kRtol, false},
      {"batchnorm2d_noaffine", [] { return BatchNorm2d(3, {.affine = false}).ptr(); }},
      {"maxpool2d", [] { return MaxPool2d(2).ptr(); }},
      {"maxpool2d_pad",
       [] {
         return MaxPool2d(3, {.stride = {2, 2}, .padding = {1, 1}}).ptr();
       }},
      {"avgpool2d", [] { return AvgPool2d(2).ptr(); }},
      {"avgpool2d_pad",
       [] {
         return AvgPool2d(3, {.stride = {2, 2}, .padding = {1, 1}}).ptr();
       }},
      {"adaptive_avgpool2d", [] { return AdaptiveAvgPool2d(1).ptr(); }},
      {"adaptive_avgpool2d_3x3", [] { return AdaptiveAvgPool2d(3).ptr(); }},
      {"flatten", [] { return Flatten().ptr(); }},
  };
}

struct LossCase {
  std::string name;  // golden name: <loss>_<reduction>
  std::shared_ptr<nn::LossImpl> loss;
};

inline std::vector<LossCase> loss_cases() {
  namespace F = weft::nn::functional;
  const std::pair<const char*, F::Reduction> reductions[] = {
      {"mean", F::Reduction::Mean}, {"sum", F::Reduction::Sum}, {"none", F::Reduction::None}};
  std::vector<LossCase> out;
  for (auto [suffix, red] : reductions) {
    const std::string s = std::string("_") + suffix;
    out.push_back({"mse" + s, std::make_shared<nn::MSELossImpl>(red)});
    out.push_back({"bce" + s, std::make_shared<nn::BCELossImpl>(red)});
    out.push_back({"bce_with_logits" + s, std::make_shared<nn::BCEWithLogitsLossImpl>(red)});
    out.push_back({"cross_entropy" + s, std::make_shared<nn::CrossEntropyLossImpl>(red)});
  }
  return out;
}

}  // namespace weft::test
