#include "weft/nn/container.h"

#include <typeinfo>

#include "nn/functional/conv_batch_norm.h"
#include "weft/nn/activation.h"
#include "weft/nn/batchnorm.h"
#include "weft/nn/conv.h"

namespace weft::nn {

SequentialImpl::SequentialImpl(std::initializer_list<std::shared_ptr<Module>> modules)
    : Module("Sequential") {
  for (auto& m : modules) push_back(m);
}

SequentialImpl::SequentialImpl(const std::vector<std::shared_ptr<Module>>& modules)
    : Module("Sequential") {
  for (auto& m : modules) push_back(m);
}

void SequentialImpl::push_back(std::shared_ptr<Module> m) {
  add_child(std::to_string(children_.size()), std::move(m));
}

void SequentialImpl::push_back(const std::string& name, std::shared_ptr<Module> m) {
  add_child(name, std::move(m));
}

namespace {
// `m` as a BatchNorm that may run fused with the ReLU `next` (Note [BatchNorm-ReLU fusion]):
// the library's own classes exactly (a subclass may override forward), neither with forward
// hooks, which would see the intermediate output; else null.
BatchNormImplBase* fusable_batch_norm(Module& m, Module& next) {
  const std::type_info& t = typeid(m);
  if (t != typeid(BatchNorm1dImpl) && t != typeid(BatchNorm2dImpl) && t != typeid(BatchNorm3dImpl))
    return nullptr;
  if (typeid(next) != typeid(ReLUImpl) || m.has_forward_hooks() || next.has_forward_hooks())
    return nullptr;
  return static_cast<BatchNormImplBase*>(&m);
}

// `m` as a Conv2d that may run fused with the BatchNorm2d and ReLU after it
// (Note [Conv-BatchNorm-ReLU fusion]), on the same terms as above; else null.
Conv2dImpl* fusable_conv(Module& m, Module& next, Module& after) {
  if (typeid(m) != typeid(Conv2dImpl) || typeid(next) != typeid(BatchNorm2dImpl) ||
      m.has_forward_hooks() || !fusable_batch_norm(next, after))
    return nullptr;
  return static_cast<Conv2dImpl*>(&m);
}

// relu(bn(conv(x))) through detail::conv2d_batch_norm_relu (x channel-blocked when
// `x_blocked`; the output blocked if `blocked_output` and fused) where bn uses its own batch's
// statistics, as BatchNormImplBase::run does in training mode; else undefined, nothing run.
Tensor conv_bn_relu(Conv2dImpl& conv, BatchNormImplBase& bn, const Tensor& x, bool x_blocked,
                    bool blocked_output) {
  if (!bn.is_training() || (bn.sync && bn.sync->world_size() > 1)) return Tensor();
  const double factor = bn.next_momentum_factor();
  const Conv2dOptions& o = conv.options;
  return detail::conv2d_batch_norm_relu(
      x, x_blocked, conv.weight, conv.bias,
      {o.stride, o.padding, o.dilation, o.groups, bn.running_mean, bn.running_var, bn.weight,
       bn.bias, factor, bn.options.eps},
      blocked_output);
}
}  // namespace

Tensor SequentialImpl::forward(const Tensor& input) {
  Tensor x = input;
  bool blocked = false;  // x is a fused block's channel-blocked output, for the next block
  const auto child = [&](size_t i) -> Module& {
    return *children_.begin()[(std::ptrdiff_t)i].second;
  };
  const size_t n = children_.size();
  for (size_t i = 0; i < n; ++i) {
    Module& m = child(i);
    if (Conv2dImpl* conv = i + 2 < n ? fusable_conv(m, child(i + 1), child(i + 2)) : nullptr) {
      // Another such block right after: hand it the output blocked.
      const bool chain = i + 5 < n && fusable_conv(child(i + 3), child(i + 4), child(i + 5));
      Tensor y =
          conv_bn_relu(*conv, static_cast<BatchNormImplBase&>(child(i + 1)), x, blocked, chain);
      if (y.defined()) {
        blocked = chain && y.dim() == 5;  // else the kernels did not fuse it: NCHW
        x = y;
        i += 2;  // the batch norm and the ReLU ran with it
        continue;
      }
    }
    if (blocked) {
      x = detail::to_nchw(x);
      blocked = false;
    }
    BatchNormImplBase* bn = i + 1 < n ? fusable_batch_norm(m, child(i + 1)) : nullptr;
    if (bn) {
      x = bn->forward_relu(x);
      ++i;  // the ReLU ran with it
    } else {
      x = m(x);  // with the child's forward hooks
    }
  }
  return blocked ? detail::to_nchw(x) : x;
}

std::shared_ptr<Module> SequentialImpl::clone() const {
  auto copy = std::make_shared<SequentialImpl>();
  for (const auto& [name, m] : children_) copy->push_back(name, m->clone());
  copy->training_ = training_;
  return copy;
}

std::shared_ptr<Module> SequentialImpl::operator[](size_t i) const {
  WEFT_CHECK(i < children_.size(), "Sequential index ", i, " out of range (size ", children_.size(),
             ")");
  return children_.begin()[(std::ptrdiff_t)i].second;
}

}  // namespace weft::nn
