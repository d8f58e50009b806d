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

}  // namespace

std::vector<std::shared_ptr<Module>> Replicator::replicate(const std::shared_ptr<Module>& source,
                                                           const std::vector<Device>& devices) {
  auto src_params = source->parameters();
  auto src_buffers = source->buffers();
  std::vector<const TensorImpl*> ids;
  for (auto& p : src_params) ids.push_back(p.impl());
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
  const Device src_device = src_params.empty() ? devices[0] : src_params[0].device();
  std::vector<std::shared_ptr<Module>> out(cache_.begin(), cache_.begin() + devices.size());
  // One node per source parameter gathers every replica's gradient: sum them on the
  // source's device and hand the sum to the parameter's accumulator.
  std::vector<std::shared_ptr<FunctionNode>> nodes;
  for (const Tensor& p : src_params) {
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
    node->num_outputs = (uint32_t)devices.size();
    node->next_edges.push_back(autograd::gradient_edge(p));
    nodes.push_back(node);
  }
  const bool wire = GradMode::is_enabled();
  NoGradGuard ng;
  // Replicas on other GPUs receive all parameters in one copy per device (PyTorch's
  // broadcast_coalesced): the source's float32 parameters are flattened once and each such
  // replica's parameters become views of its device's copy of that buffer. CPU "devices"
  // share one memory, where flattening would only add a copy: they copy parameter by parameter.
  Tensor flat_src;
  std::vector<int64_t> flat_off;
  const bool all_float = std::all_of(src_params.begin(), src_params.end(),
                                     [](const Tensor& p) { return p.dtype() == kFloat32; });
  for (size_t i = 0; i < devices.size(); ++i) {
    auto params = out[i]->parameters();
    auto buffers = out[i]->buffers();
    WEFT_CHECK(params.size() == src_params.size() && buffers.size() == src_buffers.size(),
               "replicate: replica structure differs from the source module");
    Tensor flat;
    if (devices[i].is_cuda() && devices[i] != src_device && all_float && !src_params.empty()) {
      if (!flat_src.defined()) {
        std::vector<Tensor> pieces;
        for (const Tensor& p : src_params) {
          flat_off.push_back(flat_off.empty() ? 0 : flat_off.back() + pieces.back().numel());
          pieces.push_back(p.detach().reshape({-1}));
        }
        flat_src = cat(pieces);
      }
      flat = flat_src.to(devices[i]);
    }
    for (size_t j = 0; j < params.size(); ++j) {
      Tensor& r = params[j];
      r.impl()->autograd.reset();  // forget last iteration's edge and grad
      if (devices[i] == src_params[j].device())
        share_storage(r, src_params[j]);
      else if (flat.defined())
        share_storage(r, flat.narrow(0, flat_off[j], r.numel()).view(r.sizes()));
      else
        r.copy_(src_params[j]);
      if (wire && src_params[j].requires_grad())
        autograd::set_gradient_edge(r, {nodes[j], (uint32_t)i});
    }
    for (size_t j = 0; j < buffers.size(); ++j) {
      if (devices[i] == src_buffers[j].device())
        share_storage(buffers[j], src_buffers[j]);
      else
        buffers[j].copy_(src_buffers[j]);
    }
    out[i]->train(source->is_training());
  }
  return out;
}

}  // namespace weft::nn::parallel
