// Runs replica i on inputs[i] concurrently, one thread per replica (the caller runs the
// first), each with the caller's grad mode, its device as current device and its own
// intra-op thread count. An exception in any replica is rethrown in the caller, naming
// the replica and device; all threads are joined first. What a replica prints to std::cout or
// std::cerr comes out in whole lines, never mixed inside a line with another replica's.
#pragma once

#include <memory>
#include <vector>

#include "weft/nn/module.h"

namespace weft::nn::parallel {

std::vector<std::vector<Tensor>> parallel_apply(
    const std::vector<std::shared_ptr<Module>>& replicas,
    const std::vector<std::vector<Tensor>>& inputs, const std::vector<Device>& devices,
    int threads_per_replica = 1);

}  // namespace weft::nn::parallel
