#include "weft/nn/container.h"

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

Tensor SequentialImpl::forward(const Tensor& input) {
  Tensor x = input;
  for (auto& [name, m] : children_) x = (*m)(x);  // with the child's forward hooks
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
