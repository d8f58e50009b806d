// Replicas of a module on other devices whose parameters stay connected to the source's in
// the autograd graph: gradients of every replica's parameter are summed into the source
// parameter's .grad by backward. Buffers are copied; the replica on the source's own device
// shares the source's parameters' and buffers' memory, so its buffer updates (BatchNorm
// running stats) land in the source module, as with PyTorch's DataParallel.
#pragma once

#include <memory>
#include <vector>

#include "weft/nn/module.h"

namespace weft::nn::parallel {

class Replicator {
 public:
  // Returns one replica per device. Replica modules are cached between calls and only
  // their data refreshed; the structure is rebuilt if the source's parameters change.
  std::vector<std::shared_ptr<Module>> replicate(const std::shared_ptr<Module>& source,
                                                 const std::vector<Device>& devices);

 private:
  std::vector<std::shared_ptr<Module>> cache_;
  std::vector<Device> cached_devices_;
  std::vector<const TensorImpl*> cached_params_;
};

}  // namespace weft::nn::parallel
