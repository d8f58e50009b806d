#include "weft/nn/container.h"

#include <typeinfo>

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
}  // namespace

Tensor SequentialImpl::forward(const Tensor& input) {
  Tensor x = input;
  const auto children = children_.begin();
  for (size_t i = 0; i < children_.size(); ++i) {
    Module& m = *children[(std::ptrdiff_t)i].second;
    Conv2dImpl* conv = i + 2 < children_.size()
                           ? fusable_conv(m, *children[(std::ptrdiff_t)i + 1].second,
                                          *children[(std::ptrdiff_t)i + 2].second)
                           : nullptr;
    if (conv) {
      auto& bn = static_cast<BatchNormImplBase&>(*children[(std::ptrdiff_t)i + 1].second);
      Tensor y = bn.forward_conv_relu(*conv, x);
      if (y.defined()) {
        x = y;
        i += 2;  // the batch norm and the ReLU ran with it
        continue;
      }
    }
    BatchNormImplBase* bn = i + 1 < children_.size()
                                ? fusable_batch_norm(m, *children[(std::ptrdiff_t)i + 1].second)
                                : nullptr;
    if (bn) {
      x = bn->forward_relu(x);
      ++i;  // the ReLU ran with it
    } else {
      x = m(x);  // with the child's forward hooks
    }
  }
  return x;
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
