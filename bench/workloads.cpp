#include "workloads.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "weft/generator.h"
#include "weft/nn.h"
#include "weft/ops.h"

namespace weft_bench {

namespace F = weft::nn::functional;

std::optional<Workload> make_workload(const std::string& name, int64_t batch, bool gpu,
                                      std::optional<uint64_t> data_seed) {
  using namespace weft::nn;
  if (batch <= 0 && gpu && name != "linear") batch = 256;
  // The model first, then (after reseeding, if asked) its data: the same model on every rank.
  auto reseed = [&] {
    if (data_seed) weft::manual_seed(*data_seed);
  };
  Workload w;
  if (name == "linear") {
    w.model = Linear(5, 2).ptr();
    reseed();
    if (batch <= 0) batch = 30;
    w.input = weft::randn({batch, 5});
    w.target = weft::randn({batch, 2});
    w.loss = [](const weft::Tensor& y, const weft::Tensor& t) { return F::mse_loss(y, t); };
  } else if (name == "convbn") {
    Conv2dOptions pad1;
    pad1.padding = {1, 1};
    w.model = Sequential{Conv2d(3, 32, 3, pad1),  BatchNorm2d(32), ReLU(),
                         Conv2d(32, 64, 3, pad1), BatchNorm2d(64), ReLU(),
                         AdaptiveAvgPool2d(1),    Flatten(),       Linear(64, 10)}
                  .ptr();
    reseed();
    if (batch <= 0) batch = 32;
    w.input = weft::randn({batch, 3, 32, 32});
    w.target = weft::randint(0, 10, {batch});
    w.loss = [](const weft::Tensor& y, const weft::Tensor& t) { return F::cross_entropy(y, t); };
  } else if (name == "mlp25m") {
    w.model = Sequential{Linear(1024, 2048), ReLU(), Linear(2048, 4096), ReLU(),
                         Linear(4096, 2048), ReLU(), Linear(2048, 1024)}
                  .ptr();
    reseed();
    if (batch <= 0) batch = 16;
    w.input = weft::randn({batch, 1024});
    w.target = weft::randn({batch, 1024});
    w.loss = [](const weft::Tensor& y, const weft::Tensor& t) { return F::mse_loss(y, t); };
  } else {
    return std::nullopt;
  }
  return w;
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0.0;
  double idx = p * (double)(v.size() - 1);
  size_t lo = (size_t)idx, hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (idx - (double)lo) * (v[hi] - v[lo]);
}

std::optional<int64_t> parse_count(const char* s) {
  char* end = nullptr;
  long long v = std::strtoll(s, &end, 10);
  if (end == s || *end != '\0' || v < 0) return std::nullopt;
  return v;
}

const char* weft_impl() {
  const char* v = std::getenv("WEFT_SHM");
  return v && std::string(v) == "0" ? "weft-noshm" : "weft";
}

}  // namespace weft_bench
