#include "weft/nn/parallel/replicate.h"

#include <algorithm>

#include "weft/autograd.h"
#include "weft/ops.h"

namespace weft::nn::parallel {

namespace {

// Points `dst` at `src`'s memory (same data, separate autograd identity).
void share_storage(Tensor& dst, const Tensor& src) {
  TensorImpl* d = dst.impl();
  d->storage = src.impl()->storage;
  d->offset = src.storage_offset();
  d->sizes = src.sizes();
  d->strides = src.strides();
}

// What the replicas are refreshed from: the source's parameters and buffers, the nodes that
// route the replicas' gradients back to it, and (made on first need) its flattened parameters.
struct Source {
  std::vector<Tensor> params, buffers;
  Device device = Device::CPU();
  std::vector<std::shared_ptr<FunctionNode>> nodes;
  bool wire = false;  // grad mode was on: replicas' parameters get gradient edges
  bool all_float = false;
  Tensor flat;
  std::vector<int64_t> flat_off;  // each parameter's offset in flat
};

// One node per source parameter gathers every replica's gradient: sum them on the source's
// device and hand the sum to the parameter's accumulator.
std::vector<std::shared_ptr<FunctionNode>> gradient_nodes(const std::vector<Tensor>& params,
                                                          size_t replicas, Device src_device) {
  std::vector<std::shared_ptr<FunctionNode>> nodes;
  for (const Tensor& p : params) {
    auto node =
        std::make_shared<FunctionNode>("BroadcastBackward", [src_device](std::vector<Tensor>& g) {
          Tensor sum;
          for (Tensor& gi : g) {
            if (!gi.defined()) continue;
            Tensor moved = gi.to(src_device);
            sum = sum.defined() ? sum + moved : moved;
          }
          return std::vector<Tensor>{sum};
        });
    node->device = src_device;
    node->num_outputs = (uint32_t)replicas;
    node->next_edges.push_back(autograd::gradient_edge(p));
    nodes.push_back(node);
  }
  return nodes;
}

// The source's parameters on `device` as one flat tensor, or an undefined one where they go
// parameter by parameter. Replicas on other GPUs receive all parameters in one copy per device
// (PyTorch's broadcast_coalesced): the source's float32 parameters are flattened once and each
// such replica's parameters become views of its device's copy of that buffer. CPU "devices"
// share one memory, where flattening would only add a copy.
Tensor flat_params_on(Source& src, const Device& device) {
  if (!device.is_cuda() || device == src.device || !src.all_float || src.params.empty())
    return Tensor();
  if (!src.flat.defined()) {
    std::vector<Tensor> pieces;
    for (const Tensor& p : src.params) {
      src.flat_off.push_back(src.flat_off.empty() ? 0
                                                  : src.flat_off.back() + pieces.back().numel());
      pieces.push_back(p.detach().reshape({-1}));
    }
    src.flat = cat(pieces);
  }
  return src.flat.to(device);
}

// Gives replica `index` (on `device`) the source's current parameters and buffers: shared
// memory on the source's device, copies elsewhere; its parameters' gradients route to the
// source's nodes.
void refresh_replica(Module& replica, const Device& device, uint32_t index, Source& src) {
  auto params = replica.parameters();
  auto buffers = replica.buffers();
  WEFT_CHECK(params.size() == src.params.size() && buffers.size() == src.buffers.size(),
             "replicate: replica structure differs from the source module");
  const Tensor flat = flat_params_on(src, device);
  for (size_t j = 0; j < params.size(); ++j) {
    Tensor& r = params[j];
    r.impl()->autograd.reset();  // forget last iteration's edge and grad
    if (device == src.params[j].device())
      share_storage(r, src.params[j]);
    else if (flat.defined())
      share_storage(r, flat.narrow(0, src.flat_off[j], r.numel()).view(r.sizes()));
    else
      r.copy_(src.params[j]);
    if (src.wire && src.params[j].requires_grad())
      autograd::set_gradient_edge(r, {src.nodes[j], index});
  }
  for (size_t j = 0; j < buffers.size(); ++j) {
    if (device == src.buffers[j].device())
      share_storage(buffers[j], src.buffers[j]);
    else
      buffers[j].copy_(src.buffers[j]);
  }
}

}  // namespace

std::vector<std::shared_ptr<Module>> Replicator::replicate(const std::shared_ptr<Module>& source,
                                                           const std::vector<Device>& devices) {
  Source src;
  src.params = source->parameters();
  src.buffers = source->buffers();
  std::vector<const TensorImpl*> ids;
  for (auto& p : src.params) ids.push_back(p.impl());
  if (cache_.size() < devices.size() || cached_params_ != ids ||
      !std::equal(devices.begin(), devices.end(), cached_devices_.begin())) {
    cache_.clear();
    for (const Device& d : devices) {
      auto r = source->clone();
      r->to(d);
      cache_.push_back(r);
    }
    cached_devices_ = devices;
    cached_params_ = ids;
  }
  src.device = src.params.empty() ? devices[0] : src.params[0].device();
  std::vector<std::shared_ptr<Module>> out(cache_.begin(), cache_.begin() + devices.size());
  src.nodes = gradient_nodes(src.params, devices.size(), src.device);
  src.wire = GradMode::is_enabled();
  NoGradGuard ng;
  src.all_float = std::all_of(src.params.begin(), src.params.end(),
                              [](const Tensor& p) { return p.dtype() == kFloat32; });
  for (size_t i = 0; i < devices.size(); ++i) {
    refresh_replica(*out[i], devices[i], (uint32_t)i, src);
    out[i]->train(source->is_training());
  }
  return out;
}

}  // namespace weft::nn::parallel
