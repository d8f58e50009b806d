// fully_shard: picks a module's parameters (those not in nested units), builds its FSDPUnit and
// installs the forward hooks that drive it; the registry of units; clip_grad_norm_.
#include "weft/distributed/fsdp/fully_shard.h"

#include <cmath>
#include <mutex>
#include <unordered_map>

#include "distributed/fsdp/unit.h"
#include "weft/autograd.h"
#include "weft/distributed/distributed.h"
#include "weft/ops.h"

namespace weft::dist::fsdp {

namespace {

struct Registry {
  std::mutex mu;
  std::unordered_map<const nn::Module*, std::weak_ptr<FSDPUnit>> units;
};
Registry& registry() {
  static Registry r;
  return r;
}

// The unit that manages parameter `impl`, if any (its module's type for the message).
std::shared_ptr<FSDPUnit> manager_of(const TensorImpl* impl) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lk(r.mu);
  for (auto& [m, w] : r.units) {
    auto u = w.lock();
    if (!u) continue;
    for (auto& fp : u->flat())
      for (auto& s : fp.slots)
        if (s.param.impl() == impl) return u;
  }
  return nullptr;
}

// `m`'s parameters and those of its descendants, stopping at nested units.
void collect(const nn::Module& m, const std::string& prefix, bool top,
             std::vector<std::pair<std::string, Tensor>>& out) {
  if (!top && unit_of(m)) return;
  for (const auto& [n, t] : m.own_parameters()) {
    if (!t.defined()) continue;
    bool seen = false;  // tied inside the unit: one slot
    for (auto& [on, ot] : out) seen = seen || ot.is_same(t);
    if (!seen) out.emplace_back(prefix + n, t);
  }
  for (const auto& [n, c] : m.named_children()) collect(*c, prefix + n + ".", false, out);
}

void walk_units(nn::Module& m, std::vector<std::shared_ptr<FSDPUnit>>& out) {
  if (auto u = unit_of(m)) out.push_back(u);
  for (const auto& [n, c] : m.named_children()) walk_units(*c, out);
}

}  // namespace

std::shared_ptr<FSDPUnit> unit_of(const nn::Module& m) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lk(r.mu);
  auto it = r.units.find(&m);
  return it == r.units.end() ? nullptr : it->second.lock();
}

std::vector<std::shared_ptr<FSDPUnit>> units_under(nn::Module& root) {
  std::vector<std::shared_ptr<FSDPUnit>> out;
  walk_units(root, out);
  return out;
}

std::shared_ptr<FSDPModule> fully_shard(const std::shared_ptr<nn::Module>& module,
                                        FSDPOptions options) {
  WEFT_CHECK(module, "fully_shard: null module");
  WEFT_CHECK(!unit_of(*module), "fully_shard: this ", module->type_name(),
             " is already an FSDP unit");
  std::vector<std::pair<std::string, Tensor>> params;
  collect(*module, "", true, params);
  for (const auto& [name, p] : params) {
    auto owner = manager_of(p.impl());
    WEFT_CHECK(!owner, "fully_shard: parameter '", name, "' of ", module->type_name(),
               " is already managed by the FSDP unit of a ",
               owner ? owner->module().type_name() : "",
               ": a parameter shared by two units (tied weights) is not supported, and units must "
               "be made bottom-up (blocks first, then the root); put the modules that share a "
               "parameter into one unit");
  }
  auto unit = std::make_shared<FSDPUnit>(*module, std::move(options));
  unit->init(params);
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> lk(r.mu);
    r.units[module.get()] = unit;
  }
  // The module owns its unit through the hooks; the unit holds no reference to the module.
  module->register_forward_pre_hook(
      [unit](nn::Module&, const std::vector<Tensor>& in) -> std::optional<std::vector<Tensor>> {
        unit->pre_forward();
        return unit->cast_inputs(in);
      },
      /*prepend=*/true);
  FSDPUnit* raw = unit.get();
  module->register_forward_hook(
      [raw](nn::Module&, const std::vector<Tensor>&,
            const std::vector<Tensor>& out) -> std::optional<std::vector<Tensor>> {
        return raw->post_forward(out);
      });
  return std::make_shared<FSDPModule>(unit);
}

std::shared_ptr<FSDPModule> fsdp_module(const nn::Module& module) {
  auto u = unit_of(module);
  return u ? std::make_shared<FSDPModule>(u) : nullptr;
}

std::vector<Tensor> parameters(const nn::Module& module) {
  std::vector<Tensor> out;
  for (auto& u : units_under(const_cast<nn::Module&>(module)))
    for (auto& s : u->shards()) out.push_back(s);
  return out;
}

std::vector<Tensor> FSDPModule::parameters() const { return fsdp::parameters(unit_->module()); }

void FSDPModule::set_requires_gradient_sync(bool sync, bool recurse) {
  if (!recurse) {
    unit_->requires_sync = sync;
    return;
  }
  for (auto& u : units_under(unit_->module())) u->requires_sync = sync;
}

void FSDPModule::set_reshard_after_forward(bool reshard, bool recurse) {
  if (!recurse) {
    unit_->options().reshard_after_forward = reshard;
    return;
  }
  for (auto& u : units_under(unit_->module())) u->options().reshard_after_forward = reshard;
}

void FSDPModule::unshard() { unit_->wait_unshard(); }
void FSDPModule::reshard() { unit_->reshard(); }

double clip_grad_norm_(const std::vector<Tensor>& shards, double max_norm, double norm_type,
                       std::shared_ptr<ProcessGroup> group) {
  WEFT_CHECK(norm_type > 0, "clip_grad_norm_: norm_type must be positive, got ", norm_type);
  if (!group) group = default_group();
  NoGradGuard ng;
  const bool inf = std::isinf(norm_type);
  double local = 0;
  for (const Tensor& s : shards) {
    Tensor g = s.grad();
    if (!g.defined()) continue;
    Tensor a = g.abs();
    local = inf ? std::max(local, (double)a.max().item<float>())
                : local + (double)a.pow(norm_type).sum().item<float>();
  }
  Tensor t = full({1}, local);
  group->allreduce({t}, inf ? ReduceOp::MAX : ReduceOp::SUM)->wait();
  const double total =
      inf ? (double)t.item<float>() : std::pow((double)t.item<float>(), 1.0 / norm_type);
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1.0)
    for (const Tensor& s : shards)
      if (Tensor g = s.grad(); g.defined()) g.mul_(coef);
  return total;
}

}  // namespace weft::dist::fsdp
