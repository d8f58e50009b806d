#include "weft/nn/sync_batchnorm.h"

#include "weft/autograd.h"
#include "weft/distributed/distributed.h"
#include "weft/ops.h"

namespace weft::nn {

namespace {

class ProcessGroupSync : public BatchNormSync {
 public:
  explicit ProcessGroupSync(std::shared_ptr<dist::ProcessGroup> pg) : pg_(std::move(pg)) {}

  dist::ProcessGroup* group() const {
    if (pg_) return pg_.get();
    return dist::is_initialized() ? dist::default_group().get() : nullptr;
  }
  int world_size() const override {
    auto* g = group();
    return g ? g->size() : 1;
  }

  Tensor all_gather_stats(const Tensor& row) override {
    auto* g = group();
    const int64_t L = row.numel();
    // The rows of one [world, L] buffer receive the replicas' rows: the combination reads them
    // in place (for CUDA tensors in one kernel, with no copy to the host).
    Tensor all = empty({g->size(), L}, {.device = row.device()});
    std::vector<Tensor> rows;
    for (int r = 0; r < g->size(); ++r) rows.push_back(all.select(0, r));
    g->allgather(rows, row.contiguous())->wait();
    return all;
  }

  void reduce_grads(Tensor& sum_dy, Tensor& sum_dy_xmu) override {
    auto* g = group();
    const int64_t C = sum_dy.numel();
    // The kernel hands in adjacent views of one buffer: reduce both in one collective.
    bool adjacent = sum_dy.impl()->storage == sum_dy_xmu.impl()->storage &&
                    sum_dy_xmu.storage_offset() == sum_dy.storage_offset() + C &&
                    sum_dy.is_contiguous() && sum_dy_xmu.is_contiguous();
    if (adjacent) {
      Tensor both = make_view(sum_dy, {2 * C}, {1}, sum_dy.storage_offset());
      g->allreduce({both})->wait();
      return;
    }
    Tensor both = cat({sum_dy, sum_dy_xmu});
    g->allreduce({both})->wait();
    NoGradGuard ng;
    sum_dy.copy_(both.narrow(0, 0, C));
    sum_dy_xmu.copy_(both.narrow(0, C, C));
  }

 private:
  std::shared_ptr<dist::ProcessGroup> pg_;
};

}  // namespace

std::shared_ptr<BatchNormSync> make_process_group_sync(std::shared_ptr<dist::ProcessGroup> pg) {
  return std::make_shared<ProcessGroupSync>(std::move(pg));
}

SyncBatchNormImpl::SyncBatchNormImpl(int64_t num_features, BatchNormOptions options,
                                     std::shared_ptr<dist::ProcessGroup> pg)
    : BatchNormImplBase("SyncBatchNorm", num_features, options, 2, 5),
      process_group(std::move(pg)) {
  sync = make_process_group_sync(process_group);
}

std::shared_ptr<Module> SyncBatchNormImpl::clone() const {
  auto copy = std::make_shared<SyncBatchNormImpl>(num_features, options, process_group);
  copy->copy_state_from(*this);
  return copy;
}

std::shared_ptr<Module> convert_sync_batchnorm(std::shared_ptr<Module> module,
                                               std::shared_ptr<dist::ProcessGroup> pg) {
  WEFT_CHECK(module, "convert_sync_batchnorm: null module");
  auto sync = make_process_group_sync(std::move(pg));
  for (auto& [name, m] : module->named_modules()) {
    auto* bn = dynamic_cast<BatchNormImplBase*>(m.get());
    if (!bn) continue;
    bn->sync = sync;
    bn->mark_as_sync_batchnorm();
  }
  return module;
}

bool is_sync_batchnorm(const Module& m) {
  auto* bn = dynamic_cast<const BatchNormImplBase*>(&m);
  return bn && bn->sync != nullptr;
}

}  // namespace weft::nn
