// The benchmark workloads of DESIGN.md (linear, convbn, mlp25m) and the statistics the bench
// programs share. make_workload builds the same model, batch and loss as bench/torch_step.py;
// with a data seed the inputs are drawn from it after the model (DDP ranks: same model,
// different data), without one they continue the caller's random stream.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "weft/nn/module.h"
#include "weft/tensor.h"

namespace weft_bench {

struct Workload {
  std::shared_ptr<weft::nn::Module> model;
  weft::Tensor input, target;
  std::function<weft::Tensor(const weft::Tensor&, const weft::Tensor&)> loss;
};

// nullopt for an unknown name. batch <= 0: the workload's default (256 on a GPU, except linear).
std::optional<Workload> make_workload(const std::string& name, int64_t batch, bool gpu,
                                      std::optional<uint64_t> data_seed = std::nullopt);

// Linear interpolation between the nearest ranks, p in [0, 1]; 0 for an empty vector.
double percentile(std::vector<double> v, double p);

// A non-negative decimal integer, or nullopt.
std::optional<int64_t> parse_count(const char* s);

// weft's "impl" in the JSON lines: "weft", or "weft-noshm" under WEFT_SHM=0 (the Gloo group's
// all-reduce without its shared-memory path; bench/ddp.sh shows both).
const char* weft_impl();

}  // namespace weft_bench
