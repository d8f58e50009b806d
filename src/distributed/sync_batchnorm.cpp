// SyncBatchNorm's binding to process groups: nn::BatchNormSync over a ProcessGroup, and the
// default-group sync registered into nn when the library loads.
#include "weft/distributed/sync_batchnorm.h"

#include "weft/autograd/graph.h"
#include "weft/distributed/distributed.h"
#include "weft/nn/sync_batchnorm.h"
#include "weft/ops.h"

namespace weft::dist {

namespace {

class ProcessGroupSync : public nn::BatchNormSync {
 public:
  explicit ProcessGroupSync(std::shared_ptr<ProcessGroup> pg) : pg_(std::move(pg)) {}

  ProcessGroup* group() const {
    if (pg_) return pg_.get();
    return is_initialized() ? default_group().get() : nullptr;
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
  std::shared_ptr<ProcessGroup> pg_;
};

// Registered at load: SyncBatchNorm modules built without an explicit sync use the default
// group (resolved at each forward, so the group may be initialised after conversion).
const bool g_registered = [] {
  nn::set_default_batchnorm_sync([] { return std::make_shared<ProcessGroupSync>(nullptr); });
  return true;
}();

}  // namespace

std::shared_ptr<nn::BatchNormSync> batchnorm_sync(std::shared_ptr<ProcessGroup> pg) {
  return std::make_shared<ProcessGroupSync>(std::move(pg));
}

}  // namespace weft::dist
