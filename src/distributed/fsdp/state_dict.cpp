// FSDP's state dicts (declared in weft/distributed/fsdp/fully_shard.h): the full one gathered
// from the float32 shards, and the sharded one whose entries view the shards for distributed
// checkpoints. Keys are the unsharded module's state_dict keys.
#include <algorithm>
#include <unordered_map>

#include "distributed/fsdp/unit.h"
#include "weft/autograd.h"
#include "weft/distributed/distributed.h"
#include "weft/ops.h"
#include "weft/serialize.h"

namespace weft::dist::fsdp {

namespace {

struct Where {
  FSDPUnit* unit;
  FlatParam* fp;
  ParamSlot* slot;
};

// Every managed parameter of root's tree, by impl.
std::unordered_map<const TensorImpl*, Where> managed(nn::Module& root) {
  std::unordered_map<const TensorImpl*, Where> out;
  for (auto& u : units_under(root))
    for (auto& fp : u->flat())
      for (auto& s : fp.slots) out[s.param.impl()] = {u.get(), &fp, &s};
  return out;
}

// Calls f(key, tensor, is_param) for root's parameters and buffers in state_dict() order.
template <typename F>
void walk_state(const nn::Module& m, const std::string& prefix, F&& f) {
  for (const auto& [n, t] : m.own_parameters())
    if (t.defined()) f(prefix + n, t, true);
  for (const auto& [n, t] : m.own_buffers())
    if (t.defined()) f(prefix + n, t, false);
  for (const auto& [n, c] : m.named_children()) walk_state(*c, prefix + n + ".", f);
}

// Every unit sharded: gathered copies would go stale when shards change, and state dicts are
// read and written from the shards.
void reshard_all(nn::Module& root) {
  for (auto& u : units_under(root)) u->reshard();
}

ProcessGroup& group_of(nn::Module& root) {
  auto units = units_under(root);
  return units.empty() ? *default_group() : units[0]->group();
}

}  // namespace

nn::StateDict full_state_dict(nn::Module& root, bool rank0_only) {
  NoGradGuard ng;
  reshard_all(root);
  std::unordered_map<const TensorImpl*, Tensor> values;
  int rank = 0;
  for (auto& u : units_under(root)) {
    ProcessGroup& g = u->group();
    rank = g.rank();
    for (auto& fp : u->flat()) {
      Tensor whole = empty({fp.padded}, {.device = fp.shard.device()});
      g.allgather_into_tensor(whole, fp.shard.detach())->wait();
      for (auto& s : fp.slots)
        values[s.param.impl()] = whole.narrow(0, s.offset, s.numel).reshape(s.shape).clone();
    }
  }
  nn::StateDict sd;
  if (rank0_only && rank != 0) return sd;
  walk_state(root, "", [&](const std::string& key, const Tensor& t, bool is_param) {
    auto it = is_param ? values.find(t.impl()) : values.end();
    sd.insert_or_assign(key, it != values.end() ? it->second : t.detach().clone());
  });
  return sd;
}

void save_full_state_dict(nn::Module& root, const std::string& path) {
  nn::StateDict sd = full_state_dict(root, true);
  if (group_of(root).rank() == 0) weft::save(sd, path);
}

void load_full_state_dict(nn::Module& root, const nn::StateDict& state) {
  NoGradGuard ng;
  reshard_all(root);
  auto where = managed(root);
  std::unordered_map<const FlatParam*, Tensor> flats;
  walk_state(root, "", [&](const std::string& key, const Tensor& t, bool is_param) {
    const Tensor* src = state.find(key);
    WEFT_CHECK(src, "load_full_state_dict: the state dict has no '", key, "'");
    auto it = is_param ? where.find(t.impl()) : where.end();
    if (it == where.end()) {
      WEFT_CHECK(src->sizes() == t.sizes(), "load_full_state_dict: '", key, "' is ",
                 shape_str(src->sizes()), " in the state dict but ", shape_str(t.sizes()),
                 " in the model");
      Tensor dst = t.detach();
      dst.copy_(src->to(dst.device()));
      return;
    }
    const Where& w = it->second;
    WEFT_CHECK(src->sizes() == w.slot->shape, "load_full_state_dict: '", key, "' is ",
               shape_str(src->sizes()), " in the state dict but ", shape_str(w.slot->shape),
               " in the model");
    Tensor& flat = flats[w.fp];
    if (!flat.defined()) flat = zeros({w.fp->padded}, {.device = w.fp->shard.device()});
    flat.narrow(0, w.slot->offset, w.slot->numel)
        .copy_(src->to(flat.device()).to(kFloat32).reshape({w.slot->numel}));
  });
  for (auto& [fp, flat] : flats) {
    const int rank = group_of(root).rank();
    Tensor dst = fp->shard.detach();
    dst.copy_(flat.narrow(0, (int64_t)rank * fp->shard_numel, fp->shard_numel));
  }
}

namespace {
// The part of parameter `slot`'s flattened values that `shard` (this rank's part of fp, or a
// tensor laid out like it) holds, as a ShardedTensor viewing it.
checkpoint::ShardedTensor slot_entry(const Tensor& shard, int64_t rank, const FlatParam& fp,
                                     const ParamSlot& slot) {
  const int64_t S = fp.shard_numel;
  const int64_t lo = std::max(slot.offset, rank * S);
  const int64_t hi = std::min(slot.offset + slot.numel, (rank + 1) * S);
  checkpoint::ShardedTensor st;
  st.global_shape = {slot.numel};
  if (hi > lo) {
    st.local = shard.narrow(0, lo - rank * S, hi - lo);
    st.offsets = {lo - slot.offset};
  } else {  // this rank holds none of it: an empty box
    st.local = empty({0}, {.dtype = shard.dtype(), .device = shard.device()});
    st.offsets = {0};
  }
  return st;
}
}  // namespace

checkpoint::StateDict sharded_state_dict(nn::Module& root) {
  reshard_all(root);
  auto where = managed(root);
  checkpoint::StateDict sd;
  walk_state(root, "", [&](const std::string& key, const Tensor& t, bool is_param) {
    auto it = is_param ? where.find(t.impl()) : where.end();
    if (it == where.end()) {
      sd[key] = t.detach();
      return;
    }
    const Where& w = it->second;
    sd[key] = slot_entry(w.fp->shard.detach(), w.unit->group().rank(), *w.fp, *w.slot);
  });
  return sd;
}

checkpoint::StateDict sharded_optimizer_entries(nn::Module& root,
                                                const optim::OptimizerState& state) {
  std::vector<std::pair<FSDPUnit*, FlatParam*>> shards;  // fsdp::parameters(root)'s order
  for (auto& u : units_under(root))
    for (auto& fp : u->flat()) shards.emplace_back(u.get(), &fp);
  std::unordered_map<const TensorImpl*, std::string> keys;  // a tied parameter: its first key
  walk_state(root, "", [&](const std::string& key, const Tensor& t, bool is_param) {
    if (is_param) keys.emplace(t.impl(), key);
  });
  checkpoint::StateDict sd;
  for (const auto& [key, t] : state.tensors) {
    const size_t dot = key.find('.', 6);
    WEFT_CHECK(key.rfind("state.", 0) == 0 && dot != std::string::npos,
               "sharded_optimizer_entries: '", key, "' is not an optimizer state tensor");
    const size_t i = std::stoul(key.substr(6, dot - 6));
    WEFT_CHECK(i < shards.size(), "sharded_optimizer_entries: '", key, "' is of parameter ", i,
               " but the model has ", shards.size(), " shards (fsdp::parameters)");
    auto [unit, fp] = shards[i];
    WEFT_CHECK(t.numel() == fp->shard_numel && t.is_contiguous(), "sharded_optimizer_entries: '",
               key, "' is ", t.str(), " but shard ", i, " has ", fp->shard_numel,
               " elements: not the state of an optimizer stepping fsdp::parameters()");
    const Tensor flat = t.reshape({-1});
    for (const auto& slot : fp->slots)
      sd[keys.at(slot.param.impl()) + "." + key.substr(dot + 1)] =
          slot_entry(flat, unit->group().rank(), *fp, slot);
  }
  return sd;
}

void save_sharded(nn::Module& root, const std::string& dir) {
  auto units = units_under(root);
  checkpoint::save(sharded_state_dict(root), dir,
                   units.empty() ? nullptr : units[0]->options().group);
}

void load_sharded(nn::Module& root, const std::string& dir) {
  NoGradGuard ng;
  checkpoint::StateDict sd = sharded_state_dict(root);
  checkpoint::load(sd, dir);
}

}  // namespace weft::dist::fsdp
