// BatchNorm1d/2d/3d: per-channel normalisation with running statistics. Train mode uses
// the batch's biased variance to normalise and its unbiased variance for running_var;
// momentum unset means a cumulative average (1/num_batches_tracked), as in PyTorch.
#pragma once

#include <optional>

#include "weft/nn/module.h"

namespace weft::nn {

struct BatchNormOptions {
  double eps = 1e-5;
  std::optional<double> momentum = 0.1;
  bool affine = true;
  bool track_running_stats = true;
};

// How a synchronised BatchNorm combines per-replica quantities across processes. nn only
// knows this interface; weft::dist implements it over a ProcessGroup (SyncBatchNorm), so
// the nn layer does not depend on the distributed one.
class BatchNormSync {
 public:
  virtual ~BatchNormSync() = default;
  // Number of participating replicas; 1 means "behave as plain BatchNorm".
  virtual int world_size() const = 0;
  // In: this replica's statistics packed in one float32 row [L] (count, mean, biased variance:
  // detail::pack_channel_stats). Out: every replica's row in rank order, [world_size, L], on the
  // row's device, where nn combines them (detail::combine_channel_stats). One collective; for
  // CUDA tensors ordered on the device's current stream, without a host wait.
  virtual Tensor all_gather_stats(const Tensor& row) = 0;
  // In-place sum over replicas of the two backward reductions. One collective.
  virtual void reduce_grads(Tensor& sum_dy, Tensor& sum_dy_xmu) = 0;
};

class BatchNormImplBase : public Module {
 public:
  BatchNormImplBase(std::string type_name, int64_t num_features, BatchNormOptions options,
                    int expected_min_dim, int expected_max_dim);
  // (Re)creates weight, bias and the running buffers with their initial values.
  void reset_state();
  Tensor forward(const Tensor& input) override;
  // relu(forward(input)), fused where functional::batch_norm_relu fuses (Sequential calls it
  // for a BatchNorm followed by a ReLU: Note [BatchNorm-ReLU fusion]).
  Tensor forward_relu(const Tensor& input);
  std::string extra_repr() const override;
  void reset_running_stats();
  // The factor the next train-mode forward gives the new batch statistics (bumps
  // num_batches_tracked); shared with SyncBatchNorm.
  double next_momentum_factor();
  void check_input_dim(const Tensor& input) const;

  int64_t num_features;
  BatchNormOptions options;
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  // Set by SyncBatchNorm / convert_sync_batchnorm: training statistics span all replicas.
  std::shared_ptr<BatchNormSync> sync;
  void mark_as_sync_batchnorm() { type_name_ = "SyncBatchNorm"; }

 private:
  Tensor run(const Tensor& input, bool relu);
  int min_dim_, max_dim_;
};

template <typename Derived, int MinDim, int MaxDim>
class BatchNormNd : public BatchNormImplBase {
 public:
  BatchNormNd(const char* name, int64_t num_features, BatchNormOptions options)
      : BatchNormImplBase(name, num_features, options, MinDim, MaxDim) {}
  std::shared_ptr<Module> clone() const override {
    auto copy = std::make_shared<Derived>(static_cast<const Derived&>(*this));
    copy->clear_registrations();
    copy->reset_state();
    copy->copy_state_from(*this);
    return copy;
  }
};

class BatchNorm1dImpl : public BatchNormNd<BatchNorm1dImpl, 2, 3> {
 public:
  explicit BatchNorm1dImpl(int64_t num_features, BatchNormOptions options = {})
      : BatchNormNd("BatchNorm1d", num_features, options) {}
};
class BatchNorm2dImpl : public BatchNormNd<BatchNorm2dImpl, 4, 4> {
 public:
  explicit BatchNorm2dImpl(int64_t num_features, BatchNormOptions options = {})
      : BatchNormNd("BatchNorm2d", num_features, options) {}
};
class BatchNorm3dImpl : public BatchNormNd<BatchNorm3dImpl, 5, 5> {
 public:
  explicit BatchNorm3dImpl(int64_t num_features, BatchNormOptions options = {})
      : BatchNormNd("BatchNorm3d", num_features, options) {}
};
template <typename Impl>
class BatchNormHolder : public ModuleHolder<Impl> {
 public:
  using ModuleHolder<Impl>::ModuleHolder;
  explicit BatchNormHolder(int64_t num_features, BatchNormOptions o = {})
      : ModuleHolder<Impl>(std::make_shared<Impl>(num_features, o)) {}
};
using BatchNorm1d = BatchNormHolder<BatchNorm1dImpl>;
using BatchNorm2d = BatchNormHolder<BatchNorm2dImpl>;
using BatchNorm3d = BatchNormHolder<BatchNorm3dImpl>;

}  // namespace weft::nn
