// torch.randperm(n, generator=g) after g.manual_seed(seed), on the CPU, bit for bit: what
// torch.utils.data.DistributedSampler shuffles with (seed + epoch), so that a job moved from
// PyTorch sees the same shards. Guarantee: equal to PyTorch 1.13's output (checked against
// tests/golden/distributed_sampler.safetensors) for every n; later PyTorch releases draw
// differently only for n >= 2^32 / 20 (about 214.7 million).
#pragma once

#include <cstdint>
#include <vector>

namespace weft::data::detail {

std::vector<int64_t> torch_randperm(int64_t n, uint64_t seed);

}  // namespace weft::data::detail
