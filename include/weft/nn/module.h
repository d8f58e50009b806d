// nn::Module: the base of every layer and model. Holds parameters, buffers and child
// modules in registration order; gives named access, train/eval, zero_grad, apply,
// state_dict/load_state_dict (strict or not) and a deep clone() for replicas. Modules live
// in shared_ptrs; ModuleHolder<T> (e.g. `Linear`) is the value-like handle users write, with
// libtorch's idioms: `Linear fc{nullptr};` (empty, assigned later) and
// `fc = register_module("fc", Linear(4, 8));`. Forward pre-hooks and hooks (PyTorch's
// register_forward_pre_hook / register_forward_hook) run when a module is called (operator(),
// call_multi, a holder's operator() with one tensor, Sequential), not when forward() is.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "weft/ordered_dict.h"
#include "weft/tensor.h"

namespace weft::nn {

using StateDict = OrderedDict<Tensor>;

template <typename Impl>
class ModuleHolder;

// Constructor arguments that are not a single holder H (or one derived from it): the variadic
// constructor must not win over copying a non-const holder.
template <typename H, typename First, typename... Rest>
concept NotAHolderCopy = sizeof...(Rest) > 0 || !std::is_base_of_v<H, std::remove_cvref_t<First>>;

class Module;

// A forward pre-hook sees the inputs and may return replacements (nullopt keeps them); a forward
// hook sees inputs and outputs and may return replacement outputs. PyTorch's signatures.
using ForwardPreHook =
    std::function<std::optional<std::vector<Tensor>>(Module&, const std::vector<Tensor>& inputs)>;
using ForwardHook = std::function<std::optional<std::vector<Tensor>>(
    Module&, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs)>;

namespace detail {
struct ForwardHooks {
  int next_id = 0;
  std::vector<std::pair<int, ForwardPreHook>> pre;
  std::vector<std::pair<int, ForwardHook>> post;
};
// The hooks of one module: a copy of a module (clone()) starts without them.
struct HookSlot {
  std::shared_ptr<ForwardHooks> hooks;
  HookSlot() = default;
  HookSlot(const HookSlot&) {}
  HookSlot& operator=(const HookSlot&) { return *this; }
};
}  // namespace detail

// What register_forward_(pre_)hook returns: remove() unregisters the hook (once; later calls and
// calls after the module is gone do nothing), as PyTorch's RemovableHandle.
class RemovableHandle {
 public:
  RemovableHandle() = default;
  RemovableHandle(std::weak_ptr<detail::ForwardHooks> hooks, int id)
      : hooks_(std::move(hooks)), id_(id) {}
  void remove();

 private:
  std::weak_ptr<detail::ForwardHooks> hooks_;
  int id_ = -1;
};

struct LoadResult {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
};

class Module : public std::enable_shared_from_this<Module> {
 public:
  explicit Module(std::string type_name = "Module") : type_name_(std::move(type_name)) {}
  virtual ~Module() = default;

  // One-tensor forward (most layers); multi-input modules override forward_multi.
  virtual Tensor forward(const Tensor& input);
  virtual std::vector<Tensor> forward_multi(const std::vector<Tensor>& inputs);
  // Calls forward(input) with the forward hooks around it (PyTorch's Module.__call__).
  Tensor operator()(const Tensor& input);
  // Calls forward_multi(inputs) with the forward hooks around it.
  std::vector<Tensor> call_multi(const std::vector<Tensor>& inputs);
  // Runs `fwd` (this module's forward, maybe a subclass's own overload) inside the hooks.
  Tensor call_with_hooks(const Tensor& input, const std::function<Tensor(const Tensor&)>& fwd);
  bool has_forward_hooks() const {
    return hook_slot_.hooks && (!hook_slot_.hooks->pre.empty() || !hook_slot_.hooks->post.empty());
  }
  // Hooks run in registration order; prepend puts this one first.
  RemovableHandle register_forward_pre_hook(ForwardPreHook hook, bool prepend = false);
  RemovableHandle register_forward_hook(ForwardHook hook, bool prepend = false);

  Tensor& register_parameter(const std::string& name, Tensor t, bool requires_grad = true);
  Tensor& register_buffer(const std::string& name, Tensor t);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }
  // libtorch's `fc = register_module("fc", nn::Linear(5, 2));` (fc an nn::Linear).
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, ModuleHolder<M> holder) {
    return register_module(name, holder.ptr());
  }

  std::vector<Tensor> parameters(bool recurse = true) const;
  std::vector<std::pair<std::string, Tensor>> named_parameters(bool recurse = true) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const;
  std::vector<std::shared_ptr<Module>> children() const;
  const OrderedDict<std::shared_ptr<Module>>& named_children() const { return children_; }
  // This module and all descendants, depth first, with dotted names ("" for this one).
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_modules();

  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad(bool set_to_none = true);
  void apply(const std::function<void(Module&)>& fn);
  // Moves parameters and buffers (keeping their identity, as PyTorch's Module.to).
  void to(Device device);
  // Casts the floating-point parameters and buffers (and their gradients) to `dtype`, keeping
  // their identity; int64 buffers (num_batches_tracked) stay. model.to(kBFloat16) is PyTorch's
  // model.bfloat16(); weft's optimizers step float32 parameters only.
  void to(DType dtype);

  StateDict state_dict() const;
  LoadResult load_state_dict(const StateDict& state, bool strict = true);

  // A deep copy: same structure, copied parameters and buffers, no shared storage.
  virtual std::shared_ptr<Module> clone() const;

  const std::string& type_name() const { return type_name_; }
  virtual std::string extra_repr() const { return ""; }
  std::string repr(int indent = 0) const;

  const OrderedDict<Tensor>& own_parameters() const { return params_; }
  const OrderedDict<Tensor>& own_buffers() const { return buffers_; }

 protected:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  // Used by Cloneable: forget registrations before reset() re-creates them.
  void clear_registrations() {
    params_.clear();
    buffers_.clear();
    children_.clear();
  }
  // Copies parameter/buffer values, requires_grad and training flags from `other`, whose
  // structure must be the same.
  void copy_state_from(const Module& other);

 private:
  // Replaces, in place (keeping each tensor's identity), every parameter and buffer for which
  // `applies` holds, and its gradient, by f of it, in this module and its children (to()).
  void convert(const std::function<bool(const Tensor&)>& applies,
               const std::function<Tensor(const Tensor&)>& f);

 protected:
  std::string type_name_;
  bool training_ = true;
  OrderedDict<Tensor> params_;
  OrderedDict<Tensor> buffers_;
  OrderedDict<std::shared_ptr<Module>> children_;

 private:
  std::vector<Tensor> run_hooked(
      const std::vector<Tensor>& inputs,
      const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& fwd);
  detail::HookSlot hook_slot_;
};

// CRTP base giving clone() to modules that build their state in reset().
template <typename Derived>
class Cloneable : public Module {
 public:
  using Module::Module;
  virtual void reset() = 0;
  std::shared_ptr<Module> clone() const override {
    auto copy = std::make_shared<Derived>(static_cast<const Derived&>(*this));
    copy->clear_registrations();
    copy->reset();
    copy->copy_state_from(*this);
    return copy;
  }
};

// Value-like handle to a module, as libtorch's: `Linear fc(4, 8); fc(x); fc->weight`. A holder
// made from nullptr is empty (`Linear fc{nullptr};` as a member, assigned in the constructor);
// using an empty one throws instead of dereferencing null.
template <typename Impl>
class ModuleHolder {
 public:
  // Default-constructs the module, as libtorch's holder; a module without a default constructor
  // says to start empty instead.
  ModuleHolder() : impl_(make_default()) {}
  ModuleHolder(std::nullptr_t) {}
  // Builds the module from its constructor's arguments; a lone holder argument is a copy instead.
  template <typename First, typename... Rest>
  requires NotAHolderCopy<ModuleHolder, First, Rest...>
  explicit ModuleHolder(First&& first, Rest&&... rest)
      : impl_(std::make_shared<Impl>(std::forward<First>(first), std::forward<Rest>(rest)...)) {}
  ModuleHolder(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  Impl* operator->() const { return get(); }
  Impl& operator*() const { return *get(); }
  Impl* get() const {
    WEFT_CHECK(impl_,
               "accessing an empty module holder: one made from nullptr must be assigned a module "
               "(e.g. fc = register_module(\"fc\", Linear(...)) in the constructor) before use");
    return impl_.get();
  }
  bool is_empty() const { return impl_ == nullptr; }
  explicit operator bool() const { return impl_ != nullptr; }
  const std::shared_ptr<Impl>& ptr() const { return impl_; }
  operator std::shared_ptr<Module>() const { return impl_; }
  // Calls forward; with one tensor argument the module's forward hooks run around it.
  template <typename... Args>
  auto operator()(Args&&... args) {
    Impl* m = get();
    if constexpr (sizeof...(Args) == 1 && (std::is_convertible_v<Args&&, const Tensor&> && ...)) {
      using R = decltype(m->forward(std::forward<Args>(args)...));
      if constexpr (std::is_same_v<R, Tensor>) {
        if (m->has_forward_hooks())
          return m->call_with_hooks(static_cast<const Tensor&>(args)...,
                                    [m](const Tensor& x) { return m->forward(x); });
      }
    }
    return m->forward(std::forward<Args>(args)...);
  }

 private:
  static std::shared_ptr<Impl> make_default() {
    static_assert(std::is_default_constructible_v<Impl>,
                  "this module has no default constructor: start the holder empty instead "
                  "(`Linear fc{nullptr};` or `Linear fc = nullptr;`) and assign it later");
    return std::make_shared<Impl>();
  }
  std::shared_ptr<Impl> impl_;
};

// DataParallel/DDP checkpoints carry a "module." prefix; these convert between the forms.
StateDict strip_module_prefix(const StateDict& state, const std::string& prefix = "module.");
StateDict add_module_prefix(const StateDict& state, const std::string& prefix = "module.");

}  // namespace weft::nn
