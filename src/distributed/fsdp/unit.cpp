// One FSDP unit's state machine: flat sharding at init, all-gather / free around forward and
// backward, reduce-scatter after backward. Note [FSDP parameter lifecycle] in
// docs/ARCHITECTURE.md states the invariants this file keeps.
#include "distributed/fsdp/unit.h"

#include <algorithm>

#include "weft/autograd.h"
#include "weft/distributed/distributed.h"
#include "weft/ops.h"

namespace weft::dist::fsdp {

Tensor FlatParam::full_tensor() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = full;
  impl->sizes = {padded};
  impl->strides = {1};
  impl->dtype = compute_dtype;
  return Tensor(std::move(impl));
}

namespace {
// A 16-bit tensor's bytes as float32 words (contiguous, even numel and offset): collectives
// that only move bytes (all-gather) carry bf16/fp16 this way on backends without them (Gloo).
Tensor as_words(const Tensor& t) {
  if (itemsize(t.dtype()) == 4) return t;
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.impl()->storage;
  impl->offset = t.storage_offset() / 2;
  impl->sizes = {t.numel() / 2};
  impl->strides = {1};
  impl->dtype = kFloat32;
  return Tensor(std::move(impl));
}
}  // namespace

FSDPUnit::FSDPUnit(nn::Module& module, FSDPOptions options)
    : module_(&module), options_(std::move(options)) {
  group_ = options_.group ? options_.group : default_group();
}

FSDPUnit::~FSDPUnit() {
  for (auto& [t, id] : grad_hooks_) t.remove_post_accumulate_grad_hook(id);
}

namespace {
// Copies the parameters' values into a fresh flat buffer and points each parameter's impl at
// `fp.full` (Note [FSDP parameter lifecycle], 1).
void flatten(FlatParam& fp, int rank, int world) {
  NoGradGuard ng;
  for (auto& s : fp.slots) {
    s.offset = fp.numel;
    s.numel = s.param.numel();
    s.shape = s.param.sizes();
    fp.numel += s.numel;
  }
  // 16-bit gathers move float32 words (as_words): each shard then holds an even count.
  const int64_t multiple = itemsize(fp.compute_dtype) == 2 ? 2 * world : world;
  fp.padded = (fp.numel + multiple - 1) / multiple * multiple;
  fp.shard_numel = fp.padded / world;
  const Device dev = fp.slots[0].param.device();
  Tensor flat = zeros({fp.padded}, {.device = dev});
  for (auto& s : fp.slots)
    flat.narrow(0, s.offset, s.numel).copy_(s.param.detach().reshape({s.numel}));
  fp.shard = flat.narrow(0, (int64_t)rank * fp.shard_numel, fp.shard_numel).clone();
  fp.shard.requires_grad_(fp.trainable);
  fp.full = std::make_shared<Storage>(0, dev);
  for (auto& s : fp.slots) {
    TensorImpl* impl = s.param.impl();
    impl->storage = fp.full;
    impl->offset = s.offset;
    impl->strides = contiguous_strides(s.shape);
    impl->dtype = fp.compute_dtype;
    s.param.mutable_grad() = Tensor();
    // The gathered values are not read once a gradient is computed: it may go over them.
    if (fp.trainable && fp.compute_dtype == kFloat32)
      autograd::set_gradient_overwrites_values(s.param, true);
  }
}
}  // namespace

void FSDPUnit::init(const std::vector<std::pair<std::string, Tensor>>& params) {
  const DType compute = options_.mp_policy.param_dtype.value_or(kFloat32);
  WEFT_CHECK(compute == kFloat32 || compute == DType::BFloat16 || compute == DType::Float16,
             "fully_shard: param_dtype must be float32, bfloat16 or float16, got ", compute);
  const DType reduce = options_.mp_policy.reduce_dtype.value_or(kFloat32);
  WEFT_CHECK(reduce == kFloat32 || group_->backend_name() == "nccl", "fully_shard: reduce_dtype ",
             reduce, " needs a backend that reduces it (nccl); ", group_->backend_name(),
             " reduces float32: leave reduce_dtype unset or float32");
  for (bool trainable : {true, false}) {
    FlatParam fp;
    fp.trainable = trainable;
    fp.compute_dtype = compute;
    for (const auto& [name, p] : params) {
      if (p.requires_grad() != trainable) continue;
      WEFT_CHECK(p.dtype() == kFloat32, "fully_shard: parameter '", name, "' of ",
                 module_->type_name(), " is ", p.dtype(), "; FSDP shards float32 parameters");
      WEFT_CHECK(p.device() == params[0].second.device(), "fully_shard: parameter '", name,
                 "' is on ", p.device(), " but '", params[0].first, "' on ",
                 params[0].second.device(), "; a unit's parameters share one device");
      fp.slots.push_back({name, p, {}, 0, 0});
    }
    if (fp.slots.empty()) continue;
    flatten(fp, group_->rank(), group_->size());
    flat_.push_back(std::move(fp));
  }
  // Hooks last: flat_ no longer moves.
  std::weak_ptr<FSDPUnit> weak = weak_from_this();
  for (size_t i = 0; i < flat_.size(); ++i) {
    if (!flat_[i].trainable) continue;
    for (size_t j = 0; j < flat_[i].slots.size(); ++j) {
      Tensor& p = flat_[i].slots[j].param;
      int id = p.register_post_accumulate_grad_hook([weak, i, j](Tensor&) {
        if (auto u = weak.lock()) u->on_grad_ready(i, j);
      });
      grad_hooks_.emplace_back(p, id);
    }
  }
}

std::vector<Tensor> FSDPUnit::shards() const {
  std::vector<Tensor> out;
  for (const auto& fp : flat_) out.push_back(fp.shard);
  return out;
}

void FSDPUnit::unshard() {
  if (state != ShardState::Sharded) return;
  NoGradGuard ng;
  for (auto& fp : flat_) {
    fp.full->resize_((size_t)fp.padded * itemsize(fp.compute_dtype));
    Tensor in = fp.shard.detach();
    fp.gather_input = fp.compute_dtype == kFloat32 ? in : in.to(fp.compute_dtype);
    // Straight into the flat buffer: rank r's shard lands at r * shard_numel.
    fp.gather =
        group_->allgather_into_tensor(as_words(fp.full_tensor()), as_words(fp.gather_input));
  }
  state = ShardState::Unsharding;
}

void FSDPUnit::wait_unshard() {
  if (state == ShardState::Sharded) unshard();
  if (state != ShardState::Unsharding) return;
  for (auto& fp : flat_) {
    fp.gather->wait();
    fp.gather.reset();
    fp.gather_input = Tensor();
  }
  state = ShardState::Unsharded;
}

void FSDPUnit::reshard() {
  if (state == ShardState::Unsharding) wait_unshard();
  for (auto& fp : flat_) fp.full->resize_(0);
  state = ShardState::Sharded;
}

void FSDPUnit::prefetch(int step) {
  if (!options_.prefetch || !root || !root->order_known) return;
  auto& order = root->forward_order;
  auto it = std::find(order.begin(), order.end(), this);
  if (it == order.end()) return;
  const auto pos = (it - order.begin()) + step;
  if (pos < 0 || pos >= (std::ptrdiff_t)order.size()) return;
  FSDPUnit* next = order[(size_t)pos];
  // In backward, a unit whose gradients are already reduced needs no gathering.
  if (step < 0 && std::any_of(next->flat_.begin(), next->flat_.end(),
                              [](const FlatParam& f) { return f.reduced; }))
    return;
  next->unshard();
}

std::optional<std::vector<Tensor>> FSDPUnit::cast_inputs(const std::vector<Tensor>& in) const {
  const auto dt = options_.mp_policy.param_dtype;
  if (!dt || *dt == kFloat32) return std::nullopt;
  std::vector<Tensor> out = in;
  for (Tensor& t : out)  // as FSDP2's cast_forward_inputs: floating inputs to param_dtype
    if (t.defined() && is_floating_point(t.dtype()) && t.dtype() != *dt) t = t.to(*dt);
  return out;
}

void FSDPUnit::pre_forward() {
  if (!root) {  // the first unit to run forward is the root (FSDP2's lazy init)
    root = std::make_shared<RootState>();
    is_root = true;
    for (auto& u : units_under(*module_)) {
      u->root = root;
      u->is_root = u.get() == this;
      root->units.push_back(u.get());
    }
  }
  if (is_root)
    for (FSDPUnit* u : root->units) u->forward_ran = false;
  if (!root->order_known && std::find(root->forward_order.begin(), root->forward_order.end(),
                                      this) == root->forward_order.end())
    root->forward_order.push_back(this);
  forward_ran = true;
  wait_unshard();
  prefetch(+1);
}

std::vector<Tensor> FSDPUnit::post_forward(const std::vector<Tensor>& outputs) {
  // Without grad mode no backward follows: every unit frees its parameters at once.
  if (!GradMode::is_enabled()) {
    reshard();
    return outputs;
  }
  if (!is_root && options_.reshard_after_forward) reshard();
  std::vector<Tensor> out = outputs;
  std::weak_ptr<FSDPUnit> weak = weak_from_this();
  for (Tensor& o : out) {
    if (!o.defined() || !o.requires_grad()) continue;
    // An identity node on the output: the gradient w.r.t. it arrives before any of the unit's
    // own backward runs, which is when the parameters must be gathered again.
    Tensor src = o;
    Tensor alias = make_view(src, src.sizes(), src.strides(), src.storage_offset());
    autograd::record("FSDPPreBackward", {&src}, alias, [weak](std::vector<Tensor>& g) {
      if (auto u = weak.lock()) u->pre_backward();
      return g;
    });
    o = alias;
  }
  return out;
}

void FSDPUnit::queue_end_of_backward() {
  if (!root || root->callback_queued) return;
  root->callback_queued = true;
  std::shared_ptr<RootState> r = root;
  autograd::queue_callback([r] {
    // Every unit's callback state is reset even if a collective fails.
    struct Reset {
      RootState& r;
      ~Reset() {
        r.callback_queued = false;
        if (!r.forward_order.empty()) r.order_known = true;
      }
    } reset{*r};
    for (FSDPUnit* u : r->units) u->reduce_leftovers();  // all issued before any wait
    for (FSDPUnit* u : r->units) u->end_of_backward();
    r->reducing = nullptr;
  });
}

void FSDPUnit::pre_backward() {
  queue_end_of_backward();
  if (!options_.overlap_reduce_scatter && root && root->reducing && root->reducing != this) {
    root->reducing->finish_reduce();
    root->reducing = nullptr;
  }
  wait_unshard();
  if (options_.backward_prefetch) prefetch(-1);
}

// A parameter's gradient stays in its .grad (autograd's own buffer) until every gradient of the
// FlatParam is in; then they are moved into one flat buffer and reduce-scattered.
void FSDPUnit::on_grad_ready(size_t flat, size_t /*slot*/) {
  queue_end_of_backward();
  FlatParam& fp = flat_[flat];
  // The previous unit's reduce-scatter overlapped this unit's backward up to its first gradient:
  // it is finished (its input freed) before this unit's gradients pile up.
  if (fp.grads_ready == 0 && root && root->reducing && root->reducing != this) {
    root->reducing->finish_reduce();
    root->reducing = nullptr;
  }
  if (++fp.grads_ready < (int)fp.slots.size()) return;
  // The unit's parameters are no longer needed once all its gradients are in (frozen ones may
  // still be read by backward; such a unit is freed at the end instead): their memory becomes
  // the reduce-scatter's input (Note [FSDP parameter lifecycle], 4).
  bool all = std::all_of(flat_.begin(), flat_.end(), [&](const FlatParam& f) {
    return f.trainable && (&f == &fp || f.reduced);
  });
  post_backward(fp, all);
  if (all) reshard();
}

namespace {
// The flat (padded,) float32 gradient of `fp` from its parameters' .grad (zeros where a
// parameter got none), each .grad dropped once copied. With `reuse`, in the gathered parameters'
// own memory, taken from `fp.full` (which is left freed): no unit-sized buffer is allocated.
Tensor flat_gradient(FlatParam& fp, bool reuse) {
  const Device dev = fp.shard.device();
  Tensor flat;
  if (reuse && fp.compute_dtype == kFloat32 && fp.full->nbytes == (size_t)fp.padded * 4) {
    // Gradients their formula wrote over their parameter's values are already in place.
    std::vector<bool> in_place;
    for (auto& s : fp.slots) {
      const Tensor& g = s.param.grad();
      in_place.push_back(g.defined() && g.impl()->storage == fp.full &&
                         g.storage_offset() == s.offset);
    }
    auto mem = std::make_shared<Storage>(0, dev);
    std::swap(mem->data, fp.full->data);
    std::swap(mem->nbytes, fp.full->nbytes);
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = std::move(mem);
    impl->sizes = {fp.padded};
    impl->strides = {1};
    flat = Tensor(std::move(impl));
    flat.narrow(0, fp.numel, fp.padded - fp.numel).zero_();
    for (size_t i = 0; i < fp.slots.size(); ++i) {
      Tensor& g = fp.slots[i].param.mutable_grad();
      Tensor part = flat.narrow(0, fp.slots[i].offset, fp.slots[i].numel);
      if (!g.defined())
        part.zero_();
      else if (!in_place[i])
        part.copy_(g.reshape({fp.slots[i].numel}));
      g = Tensor();
    }
    return flat;
  }
  flat = zeros({fp.padded}, {.device = dev});
  for (auto& s : fp.slots) {  // a 16-bit param_dtype's gradients: summed in float32
    Tensor& g = s.param.mutable_grad();
    if (g.defined()) flat.narrow(0, s.offset, s.numel).add_(g.reshape({s.numel}).to(kFloat32));
    g = Tensor();
  }
  return flat;
}
}  // namespace

void FSDPUnit::post_backward(FlatParam& fp, bool reuse_params) {
  if (fp.reduced) return;
  fp.reduced = true;
  NoGradGuard ng;
  // At most one reduce-scatter in flight besides this one: the previous one is finished (its
  // input freed) before this one's buffers are made (FSDP2 waits likewise).
  if (requires_sync && root) {
    if (root->reducing && root->reducing != this) root->reducing->finish_reduce();
    root->reducing = this;
  }
  const int world = group_->size();
  // A 16-bit param_dtype's gathered memory cannot hold float32 gradients: freed first instead.
  const bool reuse = reuse_params && fp.compute_dtype == kFloat32;
  if (reuse_params && !reuse) reshard();
  Tensor flat = flat_gradient(fp, reuse);
  if (fp.accumulated.defined()) flat.add_(fp.accumulated);
  fp.accumulated = Tensor();
  if (!requires_sync) {  // no_sync: keep the unsharded sum for a later synchronised backward
    fp.accumulated = flat;
    return;
  }
  const DType reduce = options_.mp_policy.reduce_dtype.value_or(kFloat32);
  if (reduce != kFloat32) flat = flat.to(reduce);
  flat.mul_(1.0 / world);  // averaged over ranks, as DDP
  fp.reduce_input = flat;
  fp.reduce_output = empty({fp.shard_numel}, {.dtype = reduce, .device = flat.device()});
  fp.reduce = group_->reduce_scatter_tensor(fp.reduce_output, flat, ReduceOp::SUM);
}

void FSDPUnit::finish_reduce() {
  NoGradGuard ng;
  for (auto& fp : flat_) {
    if (!fp.reduce) continue;
    fp.reduce->wait();
    fp.reduce.reset();
    Tensor g =
        fp.reduce_output.dtype() == kFloat32 ? fp.reduce_output : fp.reduce_output.to(kFloat32);
    Tensor& slot = fp.shard.mutable_grad();
    if (slot.defined())
      slot.add_(g);
    else
      slot = g;
    fp.reduce_input = fp.reduce_output = Tensor();
  }
}

void FSDPUnit::reduce_leftovers() {
  // Units that ran forward but some of whose parameters got no gradient still reduce (zeros for
  // those), so that every rank issues the same reduce-scatters.
  if (forward_ran)
    for (auto& fp : flat_)
      if (fp.trainable && !fp.reduced) post_backward(fp, false);
}

void FSDPUnit::end_of_backward() {
  finish_reduce();
  reshard();
  for (auto& fp : flat_) {
    fp.grads_ready = 0;
    fp.reduced = false;
  }
  forward_ran = false;
}

}  // namespace weft::dist::fsdp
