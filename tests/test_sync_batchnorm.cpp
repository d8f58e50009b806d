// SyncBatchNorm in one process: conversion keeps state and identity, without a process group it
// is plain BatchNorm, and simulated ranks (a BatchNormSync replaying their statistics) normalise
// as BatchNorm on the whole batch. The cross-process behaviour is in test_ddp.cpp; the CUDA
// path's in tests/cuda/test_cuda_nn.cpp.
#include <gtest/gtest.h>

#include "weft/autograd.h"
#include "weft/nn.h"
#include "weft/nn/batch_norm_kernels.h"
#include "weft/nn/sync_batchnorm.h"
#include "weft/ops.h"

using namespace weft;

TEST(SyncBatchNormLocal, ConvertKeepsStateAndIdentity) {
  manual_seed(0);
  nn::Sequential model(
      {nn::Conv2d(2, 3, 3), nn::BatchNorm2d(3), nn::ReLU(), nn::Flatten(), nn::Linear(12, 2)});
  model(randn({4, 2, 4, 4}));  // running stats move
  (*model)[1]->eval();
  auto bn = std::dynamic_pointer_cast<nn::BatchNorm2dImpl>((*model)[1]);
  bn->bias.requires_grad_(false);
  Tensor weight = bn->weight;
  auto before = model->state_dict();
  auto converted = nn::convert_sync_batchnorm(model.ptr());
  EXPECT_EQ(converted, model.ptr());
  EXPECT_TRUE(nn::is_sync_batchnorm(*(*model)[1]));
  EXPECT_FALSE(nn::is_sync_batchnorm(*(*model)[0]));
  EXPECT_EQ((*model)[1]->type_name(), "SyncBatchNorm");
  EXPECT_TRUE(bn->weight.is_same(weight));
  EXPECT_FALSE(bn->bias.requires_grad());
  EXPECT_FALSE((*model)[1]->is_training());
  auto after = model->state_dict();
  ASSERT_EQ(before.keys(), after.keys());
  for (auto& [k, t] : before)
    EXPECT_TRUE(allclose(t.to(kFloat32), after.at(k).to(kFloat32), 0, 0)) << k;
}

TEST(SyncBatchNormLocal, WithoutProcessGroupIsBatchNorm) {
  for (int spatial : {0, 1, 2, 3}) {
    Shape shape{6, 4};
    for (int i = 0; i < spatial; ++i) shape.push_back(3);
    manual_seed(1);
    nn::SyncBatchNorm sbn(4);
    auto ref = sbn->clone();
    std::dynamic_pointer_cast<nn::BatchNormImplBase>(ref)->sync = nullptr;
    Tensor x = randn(shape);
    Tensor a = sbn(x), b = ref->forward(x);
    EXPECT_TRUE(allclose(a, b, 0, 0)) << "rank " << shape.size();
    EXPECT_TRUE(allclose(sbn->running_var,
                         std::dynamic_pointer_cast<nn::BatchNormImplBase>(ref)->running_var, 0, 0));
  }
  nn::SyncBatchNorm sbn(4);
  EXPECT_THROW(sbn(randn({2, 5, 3})), Error);  // wrong number of features
  EXPECT_THROW(sbn(randn({2})), Error);
}

namespace {

// A BatchNormSync standing in for a process group of simulated ranks: the all-gather returns
// every rank's precomputed statistics row with the caller's own row in its slot, and the
// all-reduce adds the other ranks' precomputed backward sums.
struct ReplaySync : nn::BatchNormSync {
  std::vector<Tensor> rows;                     // per rank: packed statistics
  std::vector<std::pair<Tensor, Tensor>> sums;  // per rank: sum(dy), sum(dy * (x - mean))
  int me = 0;
  int world_size() const override { return (int)rows.size(); }
  Tensor all_gather_stats(const Tensor& row) override {
    EXPECT_TRUE(allclose(row, rows[me], 0, 0)) << "rank " << me << "'s packed row";
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

}  // namespace

TEST(SyncBatchNormLocal, ReplayedRanksMatchBatchNormOnWholeBatch) {
  // Ranks with 4, 0, 1 and 3 samples, run one after the other against a ReplaySync: each rank's
  // output, input gradient and running statistics, and the rank-sum of the weight and bias
  // gradients, equal BatchNorm's on the concatenated batch.
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
      xs.push_back(x.narrow(0, start, sizes[r]).contiguous());
      gs.push_back(gout.narrow(0, start, sizes[r]).contiguous());
      auto st = nn::detail::batch_norm_stats(xs.back());
      fake->rows.push_back(cat(
          {tensor(std::vector<float>{(float)(st.count >> 24), (float)(st.count & 0xffffff)}, {2}),
           st.mean, st.var}));
    }
    Tensor mean = nn::detail::combine_channel_stats(stack(fake->rows)).mean;
    for (size_t r = 0; r < sizes.size(); ++r)
      fake->sums.push_back(nn::detail::batch_norm_backward_reduce(gs[r], xs[r], mean));
    Tensor gw = zeros({C}), gb = zeros({C});
    for (int64_t r = 0, start = 0; r < (int64_t)sizes.size(); start += sizes[r++]) {
      SCOPED_TRACE("rank " + std::to_string(r) + " of input " + shape_str(shape));
      fake->me = (int)r;
      auto m = std::dynamic_pointer_cast<nn::BatchNormImplBase>(base->clone());
      m->sync = fake;
      Tensor xin = xs[r].clone().requires_grad_(true);
      Tensor y = m->forward(xin);
      EXPECT_LE(max_rel_diff(y, yr.narrow(0, start, sizes[r]), 1e-5, 1e-6), 1.0);
      (y * gs[r]).sum().backward();
      EXPECT_LE(max_rel_diff(xin.grad(), xr.grad().narrow(0, start, sizes[r]), 1e-5, 1e-6), 1.0);
      EXPECT_LE(max_rel_diff(m->running_mean, ref->running_mean, 1e-5, 1e-6), 1.0);
      EXPECT_LE(max_rel_diff(m->running_var, ref->running_var, 1e-5, 1e-6), 1.0);
      NoGradGuard ng;
      gw.add_(m->weight.grad());
      gb.add_(m->bias.grad());
    }
    EXPECT_LE(max_rel_diff(gw, ref->weight.grad(), 1e-5, 1e-6), 1.0);
    EXPECT_LE(max_rel_diff(gb, ref->bias.grad(), 1e-5, 1e-6), 1.0);
  }
}
