#include <cmath>

#include "weft/autograd.h"
#include "weft/dist/distributed.h"
#include "weft/nn/sync_batchnorm.h"
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

  void combine_stats(int64_t& count, Tensor& mean, Tensor& var) override {
    auto* g = group();
    const int64_t C = mean.numel();
    // One all-gather of [count_hi, count_lo, mean[C], var[C]]; the count is split in two
    // 24-bit halves so float32 carries it exactly.
    // The combination runs on the host: for CUDA tensors the C-sized statistics are copied
    // there and back (the collective itself stays on the device).
    const Device dev = mean.device(), host = dev.is_cuda() ? Device::CPU() : dev;
    NoGradGuard ng;
    Tensor mine = empty({2 + 2 * C}, {.device = host});
    float* pm = mine.data_ptr<float>();
    pm[0] = (float)(count >> 24);
    pm[1] = (float)(count & 0xffffff);
    mine.narrow(0, 2, C).copy_(mean);
    mine.narrow(0, 2 + C, C).copy_(var);
    std::vector<Tensor> all;
    for (int r = 0; r < g->size(); ++r) all.push_back(empty({2 + 2 * C}, {.device = dev}));
    g->allgather(all, mine.to(dev))->wait();
    // Chan et al.: combine (n_i, mean_i, M2_i) pairwise-stably, in double.
    std::vector<double> mu(C, 0.0), m2(C, 0.0);
    double n = 0;
    for (const Tensor& dt : all) {
      const Tensor t = dt.to(host);
      const float* p = t.data_ptr<float>();
      const double ni = (double)(((int64_t)p[0] << 24) + (int64_t)p[1]);
      if (ni == 0) continue;
      const double total = n + ni;
      for (int64_t c = 0; c < C; ++c) {
        const double mi = p[2 + c], vi = p[2 + C + c];
        const double delta = mi - mu[c];
        mu[c] += delta * ni / total;
        m2[c] += vi * ni + delta * delta * n * ni / total;
      }
      n = total;
    }
    count = (int64_t)n;
    Tensor new_mean = empty({C}, {.device = host}), new_var = empty({C}, {.device = host});
    float* om = new_mean.data_ptr<float>();
    float* ov = new_var.data_ptr<float>();
    for (int64_t c = 0; c < C; ++c) {
      om[c] = (float)mu[c];
      ov[c] = n > 0 ? (float)(m2[c] / n) : 0.0f;
    }
    mean = new_mean.to(dev);
    var = new_var.to(dev);
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
