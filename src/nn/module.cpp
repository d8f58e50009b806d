#include "weft/nn/module.h"

#include <algorithm>
#include <sstream>

#include "weft/autograd.h"
#include "weft/ops.h"

namespace weft::nn {

Tensor Module::forward(const Tensor&) {
  WEFT_ERROR(type_name_, " has no single-tensor forward(); call forward_multi()");
}

std::vector<Tensor> Module::forward_multi(const std::vector<Tensor>& inputs) {
  WEFT_CHECK(inputs.size() == 1, type_name_, ".forward takes 1 input, got ", inputs.size());
  return {forward(inputs[0])};
}

void RemovableHandle::remove() {
  auto h = hooks_.lock();
  if (!h) return;
  std::erase_if(h->pre, [&](const auto& e) { return e.first == id_; });
  std::erase_if(h->post, [&](const auto& e) { return e.first == id_; });
  hooks_.reset();
}

RemovableHandle Module::register_forward_pre_hook(ForwardPreHook hook, bool prepend) {
  WEFT_CHECK(hook, "register_forward_pre_hook: empty hook on ", type_name_);
  if (!hook_slot_.hooks) hook_slot_.hooks = std::make_shared<detail::ForwardHooks>();
  auto& h = *hook_slot_.hooks;
  const int id = h.next_id++;
  h.pre.insert(prepend ? h.pre.begin() : h.pre.end(), {id, std::move(hook)});
  return RemovableHandle(hook_slot_.hooks, id);
}

RemovableHandle Module::register_forward_hook(ForwardHook hook, bool prepend) {
  WEFT_CHECK(hook, "register_forward_hook: empty hook on ", type_name_);
  if (!hook_slot_.hooks) hook_slot_.hooks = std::make_shared<detail::ForwardHooks>();
  auto& h = *hook_slot_.hooks;
  const int id = h.next_id++;
  h.post.insert(prepend ? h.post.begin() : h.post.end(), {id, std::move(hook)});
  return RemovableHandle(hook_slot_.hooks, id);
}

std::vector<Tensor> Module::run_hooked(
    const std::vector<Tensor>& inputs,
    const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& fwd) {
  // A copy: a hook may remove itself (or others) while running.
  auto hooks = hook_slot_.hooks;
  std::vector<Tensor> in = inputs;
  for (auto pre = hooks->pre; auto& [id, fn] : pre)
    if (auto r = fn(*this, in)) in = std::move(*r);
  std::vector<Tensor> out = fwd(in);
  for (auto post = hooks->post; auto& [id, fn] : post)
    if (auto r = fn(*this, in, out)) out = std::move(*r);
  return out;
}

Tensor Module::call_with_hooks(const Tensor& input,
                               const std::function<Tensor(const Tensor&)>& fwd) {
  if (!has_forward_hooks()) return fwd(input);
  auto out = run_hooked({input}, [&](const std::vector<Tensor>& in) {
    WEFT_CHECK(in.size() == 1, type_name_, ": a forward pre-hook returned ", in.size(),
               " inputs for a one-tensor forward");
    return std::vector<Tensor>{fwd(in[0])};
  });
  WEFT_CHECK(out.size() == 1, type_name_, ": a forward hook returned ", out.size(),
             " outputs for a one-tensor forward");
  return out[0];
}

Tensor Module::operator()(const Tensor& input) {
  if (!has_forward_hooks()) return forward(input);
  return call_with_hooks(input, [this](const Tensor& x) { return forward(x); });
}

std::vector<Tensor> Module::call_multi(const std::vector<Tensor>& inputs) {
  if (!has_forward_hooks()) return forward_multi(inputs);
  return run_hooked(inputs, [this](const std::vector<Tensor>& in) { return forward_multi(in); });
}

Tensor& Module::register_parameter(const std::string& name, Tensor t, bool requires_grad) {
  WEFT_CHECK(!name.empty() && name.find('.') == std::string::npos, "parameter name '", name,
             "' must be non-empty and contain no '.'");
  WEFT_CHECK(!buffers_.contains(name) && !children_.contains(name), "attribute '", name,
             "' already exists in ", type_name_);
  if (t.defined() && t.requires_grad() != requires_grad) t.requires_grad_(requires_grad);
  return params_.insert_or_assign(name, std::move(t));
}

Tensor& Module::register_buffer(const std::string& name, Tensor t) {
  WEFT_CHECK(!name.empty() && name.find('.') == std::string::npos, "buffer name '", name,
             "' must be non-empty and contain no '.'");
  WEFT_CHECK(!params_.contains(name) && !children_.contains(name), "attribute '", name,
             "' already exists in ", type_name_);
  return buffers_.insert_or_assign(name, std::move(t));
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  WEFT_CHECK(m, "register_module('", name, "'): null module");
  WEFT_CHECK(!name.empty() && name.find('.') == std::string::npos, "module name '", name,
             "' must be non-empty and contain no '.'");
  WEFT_CHECK(!params_.contains(name) && !buffers_.contains(name), "attribute '", name,
             "' already exists in ", type_name_);
  children_.insert(name, std::move(m));
}

namespace {
template <typename F>
void walk(const Module& m, const std::string& prefix, bool recurse, F&& f) {
  f(m, prefix);
  if (!recurse) return;
  for (const auto& [name, child] : m.named_children()) walk(*child, prefix + name + ".", true, f);
}
}  // namespace

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::vector<const TensorImpl*> seen;  // shared parameters appear once, as in PyTorch
  walk(*this, "", recurse, [&](const Module& m, const std::string& p) {
    for (const auto& [n, t] : m.own_parameters()) {
      if (!t.defined() || std::find(seen.begin(), seen.end(), t.impl()) != seen.end()) continue;
      seen.push_back(t.impl());
      out.emplace_back(p + n, t);
    }
  });
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  walk(*this, "", recurse, [&](const Module& m, const std::string& p) {
    for (const auto& [n, t] : m.own_buffers())
      if (t.defined()) out.emplace_back(p + n, t);
  });
  return out;
}

std::vector<Tensor> Module::buffers(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_buffers(recurse)) out.push_back(t);
  return out;
}

std::vector<std::shared_ptr<Module>> Module::children() const {
  std::vector<std::shared_ptr<Module>> out;
  for (const auto& [n, c] : children_) out.push_back(c);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_modules() {
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> out;
  std::function<void(const std::shared_ptr<Module>&, const std::string&)> rec =
      [&](const std::shared_ptr<Module>& m, const std::string& p) {
        out.emplace_back(p, m);
        for (const auto& [n, c] : m->named_children()) rec(c, p.empty() ? n : p + "." + n);
      };
  rec(shared_from_this(), "");
  return out;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::zero_grad(bool set_to_none) {
  for (Tensor& p : parameters()) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (set_to_none) {
      p.mutable_grad() = Tensor();
    } else {
      NoGradGuard ng;
      g.zero_();
    }
  }
}

void Module::apply(const std::function<void(Module&)>& fn) {
  for (auto& [n, c] : children_) c->apply(fn);
  fn(*this);
}

namespace {
// Gives `t` the memory of `moved` (a copy of it elsewhere or in another dtype), so that every
// holder of `t` (optimizers, replicas, hooks) sees the change.
void rebind(Tensor& t, const Tensor& moved) {
  TensorImpl* impl = t.impl();
  impl->storage = moved.impl()->storage;
  impl->offset = 0;
  impl->strides = moved.strides();
  impl->dtype = moved.dtype();
}
}  // namespace

void Module::convert(const std::function<bool(const Tensor&)>& applies,
                     const std::function<Tensor(const Tensor&)>& f) {
  auto one = [&](Tensor& t) {
    if (!t.defined() || !applies(t)) return;
    rebind(t, f(t.detach()).contiguous());
    Tensor g = t.grad();
    if (g.defined()) t.mutable_grad() = f(g);
  };
  for (auto& [n, t] : params_) one(t);
  for (auto& [n, t] : buffers_) one(t);
  for (auto& [n, c] : children_) c->convert(applies, f);
}

void Module::to(Device device) {
  convert([&](const Tensor& t) { return t.device() != device; },
          [&](const Tensor& t) { return t.to(device); });
}

void Module::to(DType dtype) {
  WEFT_CHECK(is_floating_point(dtype), "Module::to: dtype must be floating point, got ", dtype);
  convert([&](const Tensor& t) { return is_floating_point(t.dtype()) && t.dtype() != dtype; },
          [&](const Tensor& t) { return t.to(dtype); });
}

StateDict Module::state_dict() const {
  StateDict sd;
  walk(*this, "", true, [&](const Module& m, const std::string& p) {
    for (const auto& [n, t] : m.own_parameters())
      if (t.defined()) sd.insert_or_assign(p + n, t.detach());
    for (const auto& [n, t] : m.own_buffers())
      if (t.defined()) sd.insert_or_assign(p + n, t.detach());
  });
  return sd;
}

namespace {
std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + ("\"" + v[i] + "\"");
  return s;
}
}  // namespace

LoadResult Module::load_state_dict(const StateDict& state, bool strict) {
  StateDict own = state_dict();
  LoadResult res;
  for (const auto& [k, t] : own)
    if (!state.contains(k)) res.missing_keys.push_back(k);
  for (const auto& [k, t] : state)
    if (!own.contains(k)) res.unexpected_keys.push_back(k);
  // Check every shape before writing anything, so a failed load changes nothing.
  for (const auto& [k, t] : own) {
    const Tensor* src = state.find(k);
    if (!src) continue;
    WEFT_CHECK(src->sizes() == t.sizes(), "load_state_dict: size mismatch for ", k,
               ": copying a param with shape ", shape_str(src->sizes()),
               " from checkpoint, the shape in current model is ", shape_str(t.sizes()));
  }
  if (strict && (!res.missing_keys.empty() || !res.unexpected_keys.empty())) {
    std::string msg = "Error(s) in loading state_dict for " + type_name_ + ":";
    if (!res.missing_keys.empty()) msg += " Missing key(s): " + join(res.missing_keys) + ".";
    if (!res.unexpected_keys.empty())
      msg += " Unexpected key(s): " + join(res.unexpected_keys) + ".";
    bool prefixed = !res.unexpected_keys.empty();
    for (auto& k : res.unexpected_keys) prefixed = prefixed && k.rfind("module.", 0) == 0;
    if (prefixed && strip_module_prefix(state).size() == state.size())
      msg +=
          " The checkpoint's keys carry a 'module.' prefix (saved from DataParallel or "
          "DistributedDataParallel): load weft::nn::strip_module_prefix(state) instead.";
    bool own_prefixed = !res.missing_keys.empty();
    for (auto& k : res.missing_keys) own_prefixed = own_prefixed && k.rfind("module.", 0) == 0;
    if (own_prefixed)
      msg +=
          " This model expects a 'module.' prefix (it is a DataParallel/DDP wrapper): load "
          "weft::nn::add_module_prefix(state), or load into its ->module().";
    WEFT_ERROR(msg);
  }
  NoGradGuard ng;
  for (auto& [k, t] : own) {
    const Tensor* src = state.find(k);
    if (!src) continue;
    Tensor dst = t;
    dst.copy_(src->to(dst.device()));
  }
  return res;
}

void Module::copy_state_from(const Module& other) {
  auto mine = named_parameters(), theirs = other.named_parameters();
  WEFT_CHECK(mine.size() == theirs.size(), "clone: ", type_name_, " re-created ", mine.size(),
             " parameters but the original has ", theirs.size());
  NoGradGuard ng;
  for (size_t i = 0; i < mine.size(); ++i) {
    Tensor& dst = mine[i].second;
    WEFT_CHECK(dst.sizes() == theirs[i].second.sizes(), "clone: parameter ", mine[i].first,
               " shape differs");
    dst.copy_(theirs[i].second);
    if (dst.requires_grad() != theirs[i].second.requires_grad())
      dst.requires_grad_(theirs[i].second.requires_grad());
  }
  auto mb = named_buffers(), tb = other.named_buffers();
  WEFT_CHECK(mb.size() == tb.size(), "clone: buffer count differs in ", type_name_);
  for (size_t i = 0; i < mb.size(); ++i) mb[i].second.copy_(tb[i].second);
  // Training flags may differ per submodule.
  std::vector<const Module*> a, b;
  walk(*this, "", true, [&](const Module& m, const std::string&) { a.push_back(&m); });
  walk(other, "", true, [&](const Module& m, const std::string&) { b.push_back(&m); });
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    const_cast<Module*>(a[i])->training_ = b[i]->training_;
}

std::shared_ptr<Module> Module::clone() const {
  WEFT_ERROR(type_name_, " does not support clone(): derive it from nn::Cloneable<", type_name_,
             "> and build its parameters in reset()");
}

std::string Module::repr(int indent) const {
  std::ostringstream os;
  os << type_name_ << "(" << extra_repr();
  if (!children_.empty()) {
    os << "\n";
    for (const auto& [n, c] : children_)
      os << std::string(indent + 2, ' ') << "(" << n << "): " << c->repr(indent + 2) << "\n";
    os << std::string(indent, ' ');
  }
  os << ")";
  return os.str();
}

StateDict strip_module_prefix(const StateDict& state, const std::string& prefix) {
  StateDict out;
  for (const auto& [k, t] : state)
    out.insert_or_assign(k.rfind(prefix, 0) == 0 ? k.substr(prefix.size()) : k, t);
  return out;
}

StateDict add_module_prefix(const StateDict& state, const std::string& prefix) {
  StateDict out;
  for (const auto& [k, t] : state) out.insert(prefix + k, t);
  return out;
}

}  // namespace weft::nn
