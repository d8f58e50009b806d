// DataParallel: one process, several devices. Each forward scatters the batch along `dim`
// over device_ids, replicates the module onto them (replica parameters wired to the
// source's in autograd), runs the replicas in parallel and gathers the outputs on
// output_device; backward leaves the summed gradient in the source module. With one device
// it calls the module directly, as PyTorch does. The wrapped module is registered as
// "module", so state_dict keys carry the "module." prefix as in PyTorch.
#pragma once

#include <optional>

#include "weft/nn/module.h"
#include "weft/nn/parallel/replicate.h"

namespace weft::nn {

struct DataParallelOptions {
  // Empty (the default): every visible GPU when the module's parameters are on a GPU, as in
  // PyTorch; otherwise exactly two CPU "devices", {Device::CPU(0), Device::CPU(1)}, i.e. two
  // replica threads that each take half of the batch. (PyTorch without a GPU runs the module
  // unsplit.) List more CPU devices for more replicas: {CPU(0), CPU(1), CPU(2), CPU(3)}.
  std::vector<Device> device_ids = {};
  std::optional<Device> output_device = std::nullopt;  // default: device_ids[0]
  int64_t dim = 0;
  int threads_per_device = 1;  // intra-op threads of each replica (CPU devices)
};

class DataParallelImpl : public Module {
 public:
  explicit DataParallelImpl(std::shared_ptr<Module> module, DataParallelOptions options = {});
  Tensor forward(const Tensor& input) override;
  // Several inputs (all scattered alike) and several outputs (each gathered).
  std::vector<Tensor> forward_multi(const std::vector<Tensor>& inputs) override;
  const std::shared_ptr<Module>& module() const { return module_; }
  const std::vector<Device>& device_ids() const { return options_.device_ids; }
  Device output_device() const { return *options_.output_device; }

 private:
  std::shared_ptr<Module> module_;
  DataParallelOptions options_;
  parallel::Replicator replicator_;
};

class DataParallel : public ModuleHolder<DataParallelImpl> {
 public:
  using ModuleHolder::ModuleHolder;
  explicit DataParallel(std::shared_ptr<Module> module, DataParallelOptions options = {})
      : ModuleHolder(std::make_shared<DataParallelImpl>(std::move(module), std::move(options))) {}
};

}  // namespace weft::nn
