// SyncBatchNorm the module and convert_sync_batchnorm; the process-group binding is
// dist::batchnorm_sync (src/distributed/sync_batchnorm.cpp).
#include "weft/nn/sync_batchnorm.h"

#include "weft/ops.h"

namespace weft::nn {

namespace {

// A single replica: statistics are the local batch's (used when no distributed layer has
// registered a default).
class LocalSync : public BatchNormSync {
 public:
  int world_size() const override { return 1; }
  Tensor all_gather_stats(const Tensor& row) override { return row.unsqueeze(0); }
  void reduce_grads(Tensor&, Tensor&) override {}
};

std::function<std::shared_ptr<BatchNormSync>()>& default_sync_factory() {
  static std::function<std::shared_ptr<BatchNormSync>()> make;
  return make;
}

}  // namespace

void set_default_batchnorm_sync(std::function<std::shared_ptr<BatchNormSync>()> make) {
  default_sync_factory() = std::move(make);
}

std::shared_ptr<BatchNormSync> default_batchnorm_sync() {
  auto& make = default_sync_factory();
  return make ? make() : std::make_shared<LocalSync>();
}

SyncBatchNormImpl::SyncBatchNormImpl(int64_t num_features, BatchNormOptions options,
                                     std::shared_ptr<BatchNormSync> s)
    : BatchNormImplBase("SyncBatchNorm", num_features, options, 2, 5) {
  sync = s ? std::move(s) : default_batchnorm_sync();
}

std::shared_ptr<Module> SyncBatchNormImpl::clone() const {
  auto copy = std::make_shared<SyncBatchNormImpl>(num_features, options, sync);
  copy->copy_state_from(*this);
  return copy;
}

std::shared_ptr<Module> convert_sync_batchnorm(std::shared_ptr<Module> module,
                                               std::shared_ptr<BatchNormSync> sync) {
  WEFT_CHECK(module, "convert_sync_batchnorm: null module");
  if (!sync) sync = default_batchnorm_sync();
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
