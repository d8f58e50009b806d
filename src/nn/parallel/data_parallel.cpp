#include "weft/nn/parallel/data_parallel.h"

#include "weft/cuda.h"
#include "weft/nn/parallel/parallel_apply.h"
#include "weft/nn/parallel/scatter_gather.h"

namespace weft::nn {

DataParallelImpl::DataParallelImpl(std::shared_ptr<Module> module, DataParallelOptions options)
    : Module("DataParallel"), module_(std::move(module)), options_(std::move(options)) {
  WEFT_CHECK(module_, "DataParallel: null module");
  if (options_.device_ids.empty()) {
    // As PyTorch: a module on a GPU spreads over every visible GPU; on the CPU, over two
    // CPU "devices" (threads).
    auto params = module_->parameters();
    const int gpus = cuda::device_count();
    if (!params.empty() && params[0].device().is_cuda() && gpus > 0) {
      for (int i = 0; i < gpus; ++i) options_.device_ids.push_back(Device::CUDA(i));
    } else {
      options_.device_ids = {Device::CPU(0), Device::CPU(1)};
    }
  }
  if (!options_.output_device) options_.output_device = options_.device_ids[0];
  WEFT_CHECK(options_.threads_per_device >= 1, "DataParallel: threads_per_device must be >= 1");
  for (size_t i = 0; i < options_.device_ids.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      WEFT_CHECK(options_.device_ids[i] != options_.device_ids[j], "DataParallel: device ",
                 options_.device_ids[i], " is listed twice in device_ids");
  const Device src = options_.device_ids[0];
  for (const auto& [name, t] : module_->named_parameters())
    WEFT_CHECK(t.device() == src,
               "DataParallel: module must have its parameters and buffers on "
               "device_ids[0] (",
               src, ") but found parameter ", name, " on ", t.device());
  for (const auto& [name, t] : module_->named_buffers())
    WEFT_CHECK(t.device() == src,
               "DataParallel: module must have its parameters and buffers on "
               "device_ids[0] (",
               src, ") but found buffer ", name, " on ", t.device());
  register_module("module", module_);
}

Tensor DataParallelImpl::forward(const Tensor& input) {
  auto out = forward_multi({input});
  WEFT_CHECK(out.size() == 1, "DataParallel: module returned ", out.size(),
             " outputs; use forward_multi()");
  return out[0];
}

std::vector<Tensor> DataParallelImpl::forward_multi(const std::vector<Tensor>& inputs) {
  const auto& devices = options_.device_ids;
  if (devices.size() == 1) {
    std::vector<Tensor> moved;
    for (const Tensor& x : inputs) moved.push_back(x.to(devices[0]));
    auto out = module_->forward_multi(moved);
    for (Tensor& o : out) o = o.to(*options_.output_device);
    return out;
  }
  auto chunks = parallel::scatter(inputs, devices, options_.dim);
  std::vector<Device> used(devices.begin(), devices.begin() + chunks.size());
  auto replicas = replicator_.replicate(module_, used);
  auto outputs = parallel::parallel_apply(replicas, chunks, used, options_.threads_per_device);
  std::vector<Tensor> gathered;
  for (size_t k = 0; k < outputs[0].size(); ++k) {
    std::vector<Tensor> parts;
    for (auto& o : outputs) parts.push_back(o.at(k));
    gathered.push_back(parallel::gather(parts, *options_.output_device, options_.dim));
  }
  return gathered;
}

}  // namespace weft::nn
