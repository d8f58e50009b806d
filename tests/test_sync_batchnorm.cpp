// SyncBatchNorm in one process: conversion keeps state and identity, without a process group it
// is plain BatchNorm, and simulated ranks (a BatchNormSync replaying their statistics) normalise
// as BatchNorm on the whole batch. The cross-process behaviour is in test_ddp.cpp; the CUDA
// path's in tests/cuda/test_cuda_nn.cpp.
#include <gtest/gtest.h>

#include "sync_bn_replay.h"
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

TEST(SyncBatchNormLocal, ReplayedRanksMatchBatchNormOnWholeBatch) {
  test::check_replayed_ranks(Device::CPU());
}
