#include "weft/distributed/reducer.h"

#include <algorithm>
#include <cstdio>
#include <unordered_set>

#include "distributed/op_record.h"
#include "ops/cpu/parallel.h"
#include "weft/autograd.h"
#include "weft/distributed/debug.h"
#include "weft/ops.h"

namespace weft::dist {

namespace {

// WEFT_DISTRIBUTED_DEBUG=INFO's lines, each written whole to stderr.
void log_info(const std::string& what) {
  const std::string line = "weft.dist INFO: " + what + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

// "a.weight, a.bias", at most `limit` names then ", ... (N more)".
std::string name_list(const std::vector<std::string>& names, const std::vector<size_t>& which,
                      size_t limit = 16) {
  std::string s;
  for (size_t i = 0; i < which.size() && i < limit; ++i) s += (i ? ", " : "") + names[which[i]];
  if (which.size() > limit) s += ", ... (" + std::to_string(which.size() - limit) + " more)";
  return s;
}

// The gradient's share of the average, as PyTorch's Reducer: g * (1 / world size), in float
// (mul_'s arithmetic: the factor rounded to float once, one product per element).
float average_factor(int world) { return static_cast<float>(1.0 / world); }

// Whether a bucket's gradients are averaged as they come in (CPU: one pass over each gradient,
// PyTorch's mul_out) or the whole bucket once it is full (other devices: one kernel per bucket
// rather than one more per gradient). Either way each element is g * average_factor once.
bool average_on_copy(const Tensor& bucket) { return bucket.device().is_cpu(); }

// Note [Gradient into a destination]: the factor a formula applies as it writes a gradient into
// its bucket slot. Only a power of two scales a product exactly as PyTorch's g * factor would
// round it; otherwise the gradient goes in unscaled and is multiplied there once (mark_ready).
float destination_scale(int world) {
  return (world & (world - 1)) == 0 ? average_factor(world) : 1.0f;
}

// CPU: dst = g * average_factor(world) in one pass over g, rather than a copy and then a second
// pass over the bucket.
void copy_averaged(Tensor& dst, const Tensor& g, int world) {
  const float f = average_factor(world);
  if (!(g.device().is_cpu() && g.dtype() == kFloat32 && dst.dtype() == kFloat32 &&
        g.is_contiguous() && g.numel() == dst.numel())) {
    dst.copy_(g.reshape({-1}));
    dst.mul_(f);
    return;
  }
  dst.bump_version();  // an in-place write, as copy_ counts it
  const float* src = g.data_ptr<float>();
  float* out = dst.data_ptr<float>();
  cpu::parallel_for(0, g.numel(), cpu::kGrainSize, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) out[k] = src[k] * f;
  });
}

}  // namespace

Reducer::Reducer(std::vector<Tensor> params, std::vector<std::string> names,
                 std::shared_ptr<ProcessGroup> group, ReducerOptions options)
    : params_(std::move(params)),
      names_(std::move(names)),
      group_(std::move(group)),
      options_(options),
      info_(get_debug_level() != DebugLevel::OFF) {
  WEFT_CHECK(group_, "Reducer: no process group");
  for (size_t i = 0; i < params_.size(); ++i) {
    WEFT_CHECK(params_[i].dtype() == kFloat32, "DistributedDataParallel: parameter ", names_[i],
               " is ", params_[i].dtype(), "; only float32 parameters are supported");
    WEFT_CHECK(params_[i].is_contiguous(), "DistributedDataParallel: parameter ", names_[i],
               " is not contiguous");
  }
  std::vector<size_t> order(params_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = order.size() - 1 - i;
  build_buckets(order);
  log_buckets("in reverse registration order");
  ready_.assign(params_.size(), false);
  used_.assign(params_.size(), false);
  for (size_t i = 0; i < params_.size(); ++i)
    hook_ids_.push_back(
        params_[i].register_post_accumulate_grad_hook([this, i](Tensor&) { on_grad_ready(i); }));
}

Reducer::~Reducer() {
  clear_destinations();
  for (size_t i = 0; i < params_.size(); ++i)
    params_[i].remove_post_accumulate_grad_hook(hook_ids_[i]);
}

void Reducer::build_buckets(const std::vector<size_t>& order) {
  buckets_.clear();
  locator_.assign(params_.size(), {0, 0});
  size_t bytes = 0;
  // The first bucket is small so that communication starts early in backward.
  auto cap = [&] {
    return buckets_.size() == 1 ? std::min(options_.first_bucket_bytes, options_.bucket_bytes)
                                : options_.bucket_bytes;
  };
  for (size_t idx : order) {
    if (buckets_.empty() || bytes >= cap()) {
      buckets_.emplace_back();
      bytes = 0;
    }
    Bucket& b = buckets_.back();
    locator_[idx] = {buckets_.size() - 1, b.params.size()};
    b.offsets.push_back(b.offsets.empty() ? 0
                                          : b.offsets.back() + params_[b.params.back()].numel());
    b.params.push_back(idx);
    bytes += params_[idx].nbytes();
  }
  for (Bucket& b : buckets_) {
    int64_t total = b.offsets.empty() ? 0 : b.offsets.back() + params_[b.params.back()].numel();
    const int64_t world = group_->size(), padded = (total + world - 1) / world * world;
    // Note [Symmetric buffers]: on CPU the group may map every rank's bucket, so that its
    // all-reduce reads and writes the buckets where they lie.
    const Device dev = params_[b.params[0]].device();
    b.padded = dev.is_cpu() ? group_->empty_symmetric({padded}) : zeros({padded}, {.device = dev});
    b.buffer = b.padded.narrow(0, 0, total);
    b.pending = b.params.size();
    for (size_t k = 0; k < b.params.size(); ++k) {
      const Tensor& p = params_[b.params[k]];
      b.slots.push_back(b.buffer.narrow(0, b.offsets[k], p.numel()).view(p.sizes()));
    }
  }
}

// Note [Gradient into a destination]: for this synchronised backward each parameter's bucket slot
// is where a formula may write its gradient (pre-divided where that is exact), sparing the copy
// into the bucket. CPU buckets only (elsewhere the bucket is divided as a whole), and never for a
// reduction that is the identity (the gradients then stay where backward put them).
void Reducer::set_destinations() {
  if (identity_reduction() || buckets_.empty() || !average_on_copy(buckets_[0].buffer)) return;
  const float scale = destination_scale(group_->size());
  for (size_t i = 0; i < params_.size(); ++i) {
    auto [bi, slot] = locator_[i];
    autograd::set_gradient_destination(params_[i], buckets_[bi].slots[slot], scale);
  }
  destinations_set_ = true;
}

void Reducer::clear_destinations() {
  if (!destinations_set_) return;
  for (const Tensor& p : params_) autograd::set_gradient_destination(p, Tensor());
  destinations_set_ = false;
}

// INFO, on rank 0 of the group (every rank builds the same buckets): the layout, each bucket's
// size and parameters.
void Reducer::log_buckets(const std::string& how) const {
  if (!info_ || group_->rank() != 0) return;
  std::string s = "DistributedDataParallel: " + std::to_string(buckets_.size()) + " bucket(s) " +
                  how + " (bucket_cap " + detail::format_bytes((int64_t)options_.bucket_bytes) +
                  ", first bucket " + detail::format_bytes((int64_t)options_.first_bucket_bytes) +
                  ")";
  for (size_t i = 0; i < buckets_.size(); ++i) {
    const Bucket& b = buckets_[i];
    s += (i ? "; " : ": ") + std::string("bucket ") + std::to_string(i) + " (" +
         detail::format_bytes((int64_t)b.buffer.nbytes()) + ") " + name_list(names_, b.params);
  }
  log_info(s);
}

// INFO: the parameters this rank's graph did not reach, by name, whenever that set changes.
void Reducer::log_unused() {
  std::vector<size_t> unused;
  for (size_t i = 0; i < params_.size(); ++i)
    if (!used_[i]) unused.push_back(i);
  if (!info_ || unused == logged_unused_) return;
  logged_unused_ = unused;
  log_info("DistributedDataParallel: rank " + std::to_string(group_->rank()) + ", iteration " +
           std::to_string(iteration_) + ": " +
           (unused.empty()
                ? std::string("every parameter is used again")
                : std::to_string(unused.size()) +
                      " parameter(s) unused in this rank's graph: " + name_list(names_, unused)));
}

std::vector<std::vector<size_t>> Reducer::bucket_indices() const {
  std::vector<std::vector<size_t>> out;
  for (const Bucket& b : buckets_) out.push_back(b.params);
  return out;
}

void Reducer::reset_iteration() {
  clear_destinations();
  std::fill(ready_.begin(), ready_.end(), false);
  std::fill(used_.begin(), used_.end(), false);
  for (Bucket& b : buckets_) {
    b.pending = b.params.size();
    b.work.reset();
    b.out = Tensor();
  }
  next_bucket_ = 0;
  finalize_queued_ = false;
}

void Reducer::prepare_for_backward(const std::vector<Tensor>& outputs) {
  reset_iteration();
  expect_backward_ = true;
  had_grad_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) had_grad_[i] = params_[i].grad().defined();
  set_destinations();
  if (options_.static_graph && iteration_ > 0) {
    used_ = static_used_;  // the graph is the same every iteration: reuse the first walk
    return;
  }
  if (!options_.find_unused_parameters && !options_.static_graph) return;
  // Walk the graph from the outputs; parameters whose accumulator is not reached get no
  // gradient in this backward, so they are marked ready as soon as backward starts.
  std::unordered_set<Node*> seen;
  std::vector<Node*> stack;
  for (const Tensor& o : outputs)
    if (o.defined() && o.grad_fn() && seen.insert(o.grad_fn().get()).second)
      stack.push_back(o.grad_fn().get());
  std::unordered_set<const TensorImpl*> reached;
  for (const Tensor& o : outputs)
    if (o.defined() && o.requires_grad() && o.is_leaf()) reached.insert(o.impl());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    if (auto* acc = dynamic_cast<AccumulateGrad*>(n)) reached.insert(acc->leaf.impl());
    for (const Edge& e : n->next_edges)
      if (e.valid() && seen.insert(e.fn.get()).second) stack.push_back(e.fn.get());
  }
  for (size_t i = 0; i < params_.size(); ++i) used_[i] = reached.count(params_[i].impl()) > 0;
  if (options_.static_graph) static_used_ = used_;
  log_unused();
}

void Reducer::on_grad_ready(size_t index) {
  if (!expect_backward_) return;  // forward ran under no_sync, or outside DDP
  if (!finalize_queued_) {
    finalize_queued_ = true;
    autograd::queue_callback([this] { finalize(); });
    if (options_.find_unused_parameters || options_.static_graph) {
      std::vector<bool> reached = used_;
      for (size_t i = 0; i < params_.size(); ++i)
        if (!reached[i]) mark_ready(i, false);
    }
  }
  if (!buckets_rebuilt_) arrival_order_.push_back(index);
  used_[index] = true;
  mark_ready(index, true);
}

void Reducer::mark_ready(size_t i, bool have_grad) {
  WEFT_CHECK(!ready_[i], "DistributedDataParallel: parameter ", names_[i],
             " was marked ready twice in one iteration (used in a reentrant backward, or "
             "both unused and used); this is not supported");
  ready_[i] = true;
  auto [bi, slot] = locator_[i];
  Bucket& b = buckets_[bi];
  if (identity_reduction()) {  // the gradient is final where it is
    if (--b.pending == 0) launch_ready_buckets();
    return;
  }
  Tensor view = b.buffer.narrow(0, b.offsets[slot], params_[i].numel());
  Tensor g = params_[i].grad();
  NoGradGuard ng;
  if (have_grad && g.defined() && autograd::gradient_went_to_destination(params_[i])) {
    // Written into its slot by backward: multiplied by the factor already, or once here.
    const float f = average_factor(group_->size());
    if (destination_scale(group_->size()) != f) view.mul_(f);
  } else if (have_grad && g.defined()) {
    const bool in_place = g.impl()->storage == b.buffer.impl()->storage &&
                          g.storage_offset() == view.storage_offset();  // a bucket view
    if (!average_on_copy(b.buffer)) {
      if (!in_place) view.copy_(g.reshape({-1}));
    } else if (in_place) {
      view.mul_(average_factor(group_->size()));
    } else {
      copy_averaged(view, g, group_->size());
    }
  } else {
    view.zero_();
  }
  // The hook owns the reduced gradients (ZeRO-2): this rank's unreduced one is not kept.
  if (hook_owns_grads_) params_[i].mutable_grad() = Tensor();
  if (--b.pending == 0) launch_ready_buckets();
}

void Reducer::launch_ready_buckets() {
  // Strictly in bucket order, so every rank issues the same all-reduces in the same order.
  while (next_bucket_ < buckets_.size() && buckets_[next_bucket_].pending == 0) {
    Bucket& b = buckets_[next_bucket_];
    NoGradGuard ng;
    if (identity_reduction()) {
      ++next_bucket_;
      continue;
    }
    if (!average_on_copy(b.buffer)) b.buffer.mul_(average_factor(group_->size()));
    if (hook_) {
      GradBucket gb{next_bucket_, b.buffer, {}, next_bucket_ + 1 == buckets_.size(), b.padded};
      for (size_t p : b.params) gb.params.push_back(params_[p]);
      b.work = hook_(*group_, gb);
    } else if (average_on_copy(b.buffer) && !options_.gradient_as_bucket_view) {
      // Note [All-reduce into a separate output]: the result lands in memory of its own, which
      // the gradients then view, instead of being copied out of the bucket afterwards.
      b.out = empty({b.buffer.numel()});
      b.work = group_->allreduce_into(b.out, b.buffer);
    } else {
      b.work = group_->allreduce({b.buffer});
    }
    ++next_bucket_;
  }
}

void Reducer::finalize() {
  expect_backward_ = false;
  if (next_bucket_ < buckets_.size()) fail_unready();
  for (Bucket& b : buckets_)
    if (b.work) b.work->wait();
  NoGradGuard ng;
  const std::vector<bool> used = globally_used();
  if (!hook_owns_grads_) write_back_grads(used);
  if (!buckets_rebuilt_) rebuild_buckets();
  reset_iteration();
  ++iteration_;
}

// Some bucket never filled: parameters without a gradient that find_unused_parameters was not
// told to expect. Names up to 8 of them.
void Reducer::fail_unready() {
  std::string missing;
  int shown = 0;
  for (size_t i = 0; i < params_.size(); ++i)
    if (!ready_[i] && shown++ < 8) missing += (missing.empty() ? "" : ", ") + names_[i];
  // Drain what was launched so the group stays usable for the error path.
  for (Bucket& b : buckets_)
    if (b.work) b.work->wait();
  reset_iteration();
  WEFT_ERROR("DistributedDataParallel: rank ", group_->rank(),
             " finished backward but these "
             "parameters received no gradient: ",
             missing,
             ". Parameters that do not take part "
             "in producing the loss need DistributedDataParallel(..., {.find_unused_parameters "
             "= true}); otherwise the other ranks would wait for them forever.");
}

// Which parameters some rank produced a gradient for: all of them, unless unused parameters are
// tracked (then the ranks' used flags are MAX-reduced).
std::vector<bool> Reducer::globally_used() {
  std::vector<bool> used(params_.size(), true);
  if (options_.static_graph && !options_.find_unused_parameters) used = static_used_;
  if (options_.find_unused_parameters) {
    Tensor flags = zeros({(int64_t)params_.size()}, {.dtype = kInt64});
    int64_t* pf = flags.data_ptr<int64_t>();
    for (size_t i = 0; i < params_.size(); ++i) pf[i] = used_[i] ? 1 : 0;
    // On the parameters' device (NCCL reduces device memory only), read back on the host.
    Tensor dflags = flags.to(device());
    group_->allreduce({dflags}, ReduceOp::MAX)->wait();
    flags = dflags.to(Device::CPU());
    pf = flags.data_ptr<int64_t>();
    for (size_t i = 0; i < params_.size(); ++i) used[i] = pf[i] != 0;
  }
  return used;
}

void Reducer::write_back_grads(const std::vector<bool>& globally_used) {
  for (size_t i = 0; i < params_.size() && !identity_reduction(); ++i) {
    if (!globally_used[i]) continue;  // no rank produced a gradient: leave .grad untouched
    auto [bi, slot] = locator_[i];
    Bucket& b = buckets_[bi];
    const Tensor& slice = b.slots[slot];
    Tensor& g = params_[i].mutable_grad();
    if (options_.gradient_as_bucket_view) {
      g = slice.view(slice.sizes());
    } else if (b.out.defined()) {
      // Note [All-reduce into a separate output]: a .grad that was there before backward keeps
      // its identity (and takes a copy); one this backward made becomes a view of the result.
      Tensor result = b.out.narrow(0, b.offsets[slot], slice.numel()).view(slice.sizes());
      if (g.defined() && had_grad_[i])
        g.copy_(result);
      else
        g = result;
    } else if (g.defined() && !autograd::gradient_went_to_destination(params_[i])) {
      g.copy_(slice);
    } else {  // none yet, or the bucket slot itself (Note [Gradient into a destination])
      g = slice.clone();
    }
  }
}

// Rebuilds once, in the order gradients arrived on rank 0 (broadcast so all agree). Gradients
// that are bucket views move into the new buckets.
void Reducer::rebuild_buckets() {
  std::vector<bool> seen(params_.size(), false);
  std::vector<int64_t> order;
  for (size_t idx : arrival_order_)
    if (!seen[idx]) {
      seen[idx] = true;
      order.push_back((int64_t)idx);
    }
  for (size_t i = params_.size(); i-- > 0;)
    if (!seen[i]) order.push_back((int64_t)i);
  const std::vector<size_t> new_order = agreed_order(order);
  std::vector<Tensor> keep;
  if (options_.gradient_as_bucket_view)
    for (auto& p : params_) keep.push_back(p.grad().defined() ? p.grad().clone() : Tensor());
  build_buckets(new_order);
  log_buckets("rebuilt in the order gradients arrived");
  if (options_.gradient_as_bucket_view)
    for (size_t i = 0; i < params_.size(); ++i) {
      if (!keep[i].defined()) continue;
      auto [bi, slot] = locator_[i];
      Tensor& slice = buckets_[bi].slots[slot];
      slice.copy_(keep[i]);
      params_[i].mutable_grad() = slice.view(slice.sizes());
    }
  buckets_rebuilt_ = true;
}

std::vector<size_t> Reducer::agreed_order(const std::vector<int64_t>& order) {
  Tensor t = tensor(order, {(int64_t)order.size()}).to(device());
  group_->broadcast({t}, 0)->wait();
  auto agreed = t.to(Device::CPU()).to_vector_int64();
  return std::vector<size_t>(agreed.begin(), agreed.end());
}

void Reducer::reduce_zeros_as_joined() {
  NoGradGuard ng;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    Bucket& b = buckets_[i];
    b.buffer.zero_();
    b.work = group_->allreduce({b.buffer});
  }
  for (Bucket& b : buckets_) b.work->wait();
  if (options_.find_unused_parameters) {
    Tensor flags = zeros({(int64_t)params_.size()}, {.dtype = kInt64, .device = device()});
    group_->allreduce({flags}, ReduceOp::MAX)->wait();
  }
  if (!buckets_rebuilt_) {
    // Every rank builds rank 0's order; a rank that joined early proposes the initial one.
    std::vector<int64_t> order;
    for (size_t i = params_.size(); i-- > 0;) order.push_back((int64_t)i);
    build_buckets(agreed_order(order));
    log_buckets("rebuilt in rank 0's order (this rank joined early)");
    buckets_rebuilt_ = true;
  }
  reset_iteration();
}

}  // namespace weft::dist
