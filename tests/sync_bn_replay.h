// Test helper for SyncBatchNorm in one process, shared by the CPU and CUDA tests: ReplaySync, a
// BatchNormSync standing in for a process group of simulated ranks, and the check that ranks with
// 4, 0, 1 and 3 samples, run one after the other on `device`, give BatchNorm's output, input
// gradient, running statistics and (summed over ranks) weight and bias gradients on the whole
// batch computed on the CPU.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "golden.h"
#include "weft/autograd.h"
#include "weft/nn.h"
#include "weft/nn/batch_norm_kernels.h"
#include "weft/nn/sync_batchnorm.h"
#include "weft/ops.h"

namespace weft::test {

// The all-gather returns every rank's precomputed statistics row with the caller's own row in
// its slot; the all-reduce adds the other ranks' precomputed backward sums.
struct ReplaySync : nn::BatchNormSync {
  std::vector<Tensor> rows;                     // per rank: packed statistics
  std::vector<std::pair<Tensor, Tensor>> sums;  // per rank: sum(dy), sum(dy * (x - mean))
  int me = 0;
  int world_size() const override { return (int)rows.size(); }
  Tensor all_gather_stats(const Tensor& row) override {
    EXPECT_EQ(row.device(), rows[me].device());
    EXPECT_TRUE(allclose(row.to(Device::CPU()), rows[me].to(Device::CPU()), 0, 0))
        << "rank " << me << "'s packed row";
    std::vector<Tensor> all = rows;
    all[me] = row;
    return stack(all);
  }
  void reduce_grads(Tensor& sum_dy, Tensor& sum_dy_xmu) override {
    NoGradGuard ng;
    for (int r = 0; r < world_size(); ++r) {
      if (r == me) continue;
      sum_dy.add_(sums[r].first);
      sum_dy_xmu.add_(sums[r].second);
    }
  }
};

inline void check_replayed_ranks(Device device) {
  const Device cpu = Device::CPU();
  const std::vector<int64_t> sizes{4, 0, 1, 3};
  const int64_t C = 3, total = 8;
  for (Shape tail : {Shape{}, Shape{3, 2}}) {
    Shape shape{total, C};
    shape.insert(shape.end(), tail.begin(), tail.end());
    Generator gen(11);
    Tensor x = randn(shape, &gen) * 2.0 + 0.5, gout = randn(shape, &gen);
    nn::SyncBatchNorm base(C);
    {
      NoGradGuard ng;
      base->weight.copy_(tensor(std::vector<float>{1.5f, -0.5f, 2.0f}, {3}));
      base->bias.copy_(tensor(std::vector<float>{0.1f, 0.2f, -0.3f}, {3}));
    }
    auto ref = std::dynamic_pointer_cast<nn::BatchNormImplBase>(base->clone());
    ref->sync = nullptr;
    Tensor xr = x.clone().requires_grad_(true);
    Tensor yr = ref->forward(xr);
    (yr * gout).sum().backward();

    auto fake = std::make_shared<ReplaySync>();
    std::vector<Tensor> xs, gs;
    for (int64_t r = 0, start = 0; r < (int64_t)sizes.size(); start += sizes[r++]) {
      xs.push_back(x.narrow(0, start, sizes[r]).contiguous().to(device));
      gs.push_back(gout.narrow(0, start, sizes[r]).contiguous().to(device));
      fake->rows.push_back(nn::detail::pack_channel_stats(nn::detail::batch_norm_stats(xs.back())));
    }
    Tensor mean = nn::detail::combine_channel_stats(stack(fake->rows)).mean;
    for (size_t r = 0; r < sizes.size(); ++r)
      fake->sums.push_back(nn::detail::batch_norm_backward_reduce(gs[r], xs[r], mean));
    Tensor gw = zeros({C}), gb = zeros({C});
    for (int64_t r = 0, start = 0; r < (int64_t)sizes.size(); start += sizes[r++]) {
      const std::string at = "rank " + std::to_string(r) + " of " + shape_str(shape) + ": ";
      fake->me = (int)r;
      auto m = std::dynamic_pointer_cast<nn::BatchNormImplBase>(base->clone());
      m->to(device);
      m->sync = fake;
      Tensor xin = xs[r].clone().requires_grad_(true);
      Tensor y = m->forward(xin);
      ASSERT_EQ(y.device(), device);
      EXPECT_TRUE(close(y.to(cpu), yr.narrow(0, start, sizes[r]), kRtol, at + "output"));
      (y * gs[r]).sum().backward();
      EXPECT_TRUE(close(xin.grad().to(cpu), xr.grad().narrow(0, start, sizes[r]), kRtol,
                        at + "input gradient"));
      EXPECT_TRUE(close(m->running_mean.to(cpu), ref->running_mean, kRtol, at + "running_mean"));
      EXPECT_TRUE(close(m->running_var.to(cpu), ref->running_var, kRtol, at + "running_var"));
      EXPECT_EQ(m->num_batches_tracked.to(cpu).item<int64_t>(), 1) << at;
      NoGradGuard ng;
      gw.add_(m->weight.grad().to(cpu));
      gb.add_(m->bias.grad().to(cpu));
    }
    EXPECT_TRUE(close(gw, ref->weight.grad(), kRtol, "weight gradient summed over ranks"));
    EXPECT_TRUE(close(gb, ref->bias.grad(), kRtol, "bias gradient summed over ranks"));
  }
}

}  // namespace weft::test
