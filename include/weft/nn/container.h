// Sequential: children named "0", "1", ... applied in order. Clones child by child, so it
// can hold any cloneable module.
#pragma once

#include <memory>
#include <vector>

#include "weft/nn/module.h"

namespace weft::nn {

class SequentialImpl : public Module {
 public:
  SequentialImpl() : Module("Sequential") {}
  SequentialImpl(std::initializer_list<std::shared_ptr<Module>> modules);
  explicit SequentialImpl(const std::vector<std::shared_ptr<Module>>& modules);
  void push_back(std::shared_ptr<Module> m);
  void push_back(const std::string& name, std::shared_ptr<Module> m);
  Tensor forward(const Tensor& input) override;
  std::shared_ptr<Module> clone() const override;
  size_t size() const { return children_.size(); }
  std::shared_ptr<Module> operator[](size_t i) const;
};

class Sequential : public ModuleHolder<SequentialImpl> {
 public:
  Sequential() : ModuleHolder() {}
  Sequential(std::initializer_list<std::shared_ptr<Module>> modules)
      : ModuleHolder(std::make_shared<SequentialImpl>(modules)) {}
  Sequential(std::shared_ptr<SequentialImpl> impl) : ModuleHolder(std::move(impl)) {}
};

}  // namespace weft::nn
