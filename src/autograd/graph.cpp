// autograd's graph (weft/autograd/graph.h): Node sequence numbers, grad mode, FunctionNode's
// saved-version check, AccumulateGrad, and record(), which differentiable ops call.
#include "weft/autograd/graph.h"

#include <atomic>

namespace weft {

namespace {
std::atomic<uint64_t> g_sequence{0};
thread_local bool g_grad_enabled = true;
thread_local const autograd::detail::PassInfo* t_pass = nullptr;
// Spares the engine its scan while no leaf was ever marked or given a destination.
std::atomic<bool> g_any_marked{false};

// The gradient is a view of exactly `place` (the leaf's memory or its destination): the formula
// wrote it there, and it is kept as the .grad as it is.
// Note [Gradient into the parameter's memory], Note [Gradient into a destination].
bool lies_exactly_in(const Tensor& g, const Tensor& place) {
  return g.impl()->storage == place.impl()->storage &&
         g.storage_offset() == place.storage_offset() && g.strides() == place.strides() &&
         g.dtype() == place.dtype();
}
}  // namespace

Node::Node() : sequence_nr(g_sequence.fetch_add(1, std::memory_order_relaxed)) {}

bool GradMode::is_enabled() { return g_grad_enabled; }
void GradMode::set_enabled(bool e) { g_grad_enabled = e; }

std::vector<Tensor> FunctionNode::apply(std::vector<Tensor>&& grads) {
  WEFT_CHECK(fn_, "Trying to backward through the graph a second time (through ", name_,
             "): its saved tensors were freed. Pass retain_graph=true to the first backward.");
  for (const Saved& s : saved_) {
    const uint32_t now = s.storage->version.load(std::memory_order_relaxed);
    WEFT_CHECK(now == s.version,
               "one of the variables needed for gradient computation has been modified by an "
               "inplace operation: a ",
               s.dtype, " tensor of shape ", shape_str(s.sizes), " saved by ", name_,
               " is at version ", now, "; expected version ", s.version,
               " instead (it was written in place, e.g. by copy_, fill_, add_, mul_ or an "
               "optimizer step, after the forward pass that used it)");
  }
  return fn_(grads);
}

void FunctionNode::save_versions(const std::vector<Tensor>& saved) {
  saved_.reserve(saved.size());
  for (const Tensor& t : saved)
    if (t.defined()) saved_.push_back({t.impl()->storage, t._version(), t.sizes(), t.dtype()});
}

AccumulateGrad::AccumulateGrad(Tensor l) : leaf(std::move(l)) {
  sequence_nr = UINT64_MAX;  // run as soon as ready
  device = leaf.device();
}

// Accumulates, then fires the leaf's post-accumulate-grad hooks: step 2 of
// Note [The gradient's path] in docs/ARCHITECTURE.md.
std::vector<Tensor> AccumulateGrad::apply(std::vector<Tensor>&& grads) {
  Tensor& g = grads[0];
  if (!g.defined()) return {};
  WEFT_CHECK(g.sizes() == leaf.sizes(), "gradient ", g.str(), " does not match parameter ",
             leaf.str());
  NoGradGuard ng;
  Tensor& slot = leaf.mutable_grad();
  if (!slot.defined()) {
    // Steal the incoming buffer when nobody else can see it; otherwise copy.
    bool unique = g.impl_ptr().use_count() == 1 && g.impl()->storage.use_count() == 1 &&
                  g.is_contiguous() && g.numel() * itemsize(g.dtype()) == g.impl()->storage->nbytes;
    AutogradMeta* m = leaf.impl()->autograd.get();
    const bool own = m && m->grad_overwrites_values && lies_exactly_in(g, leaf);
    const bool dest = m && m->grad_destination && lies_exactly_in(g, *m->grad_destination);
    if (dest) m->grad_destination_written = true;
    slot = unique || own || dest ? g.detach() : g.clone();
  } else {
    slot.add_(g);
  }
  auto& hooks = leaf.impl()->meta().post_acc_hooks;
  for (size_t i = 0; i < hooks.size(); ++i) hooks[i].second(leaf);
  return {};
}

namespace autograd {

Edge gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  AutogradMeta& m = t.impl()->meta();
  if (m.grad_fn) return {m.grad_fn, m.output_nr};
  auto acc = m.grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t);
    m.grad_accumulator = acc;
  }
  return {acc, 0};
}

void set_gradient_edge(Tensor& t, Edge edge) {
  AutogradMeta& m = t.impl()->meta();
  m.requires_grad = true;
  m.grad_fn = std::move(edge.fn);
  m.output_nr = edge.input_nr;
}

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t && t->requires_grad()) return true;
  return false;
}

void record(const std::string& name, std::initializer_list<const Tensor*> inputs,
            std::vector<Tensor*> outputs, FunctionNode::Fn backward,
            const std::vector<Tensor>& saved) {
  if (!any_requires_grad(inputs)) return;
  auto node = std::make_shared<FunctionNode>(name, std::move(backward));
  node->save_versions(saved);
  node->next_edges.reserve(inputs.size());
  for (const Tensor* t : inputs) node->next_edges.push_back(t ? gradient_edge(*t) : Edge{});
  node->num_outputs = (uint32_t)outputs.size();
  for (Tensor* o : outputs)
    if (o && o->defined()) {
      node->device = o->device();
      break;
    }
  for (uint32_t i = 0; i < outputs.size(); ++i)
    if (outputs[i] && outputs[i]->defined()) set_gradient_edge(*outputs[i], {node, i});
}

void set_gradient_overwrites_values(const Tensor& leaf, bool on) {
  WEFT_CHECK(leaf.defined() && !leaf.grad_fn(),
             "set_gradient_overwrites_values expects a leaf tensor, got ",
             leaf.defined() ? leaf.str() + " with a grad_fn" : std::string("an undefined tensor"));
  leaf.impl()->meta().grad_overwrites_values = on;
  if (on) g_any_marked.store(true, std::memory_order_relaxed);
}

void set_gradient_destination(const Tensor& leaf, const Tensor& dest, float scale) {
  WEFT_CHECK(leaf.defined() && !leaf.grad_fn(),
             "set_gradient_destination expects a leaf tensor, got ",
             leaf.defined() ? leaf.str() + " with a grad_fn" : std::string("an undefined tensor"));
  AutogradMeta& m = leaf.impl()->meta();
  m.grad_destination_written = false;
  if (!dest.defined()) {
    m.grad_destination.reset();
    return;
  }
  WEFT_CHECK(dest.dtype() == kFloat32 && dest.is_contiguous() && dest.sizes() == leaf.sizes() &&
                 dest.device() == leaf.device() && dest.impl()->storage != leaf.impl()->storage,
             "set_gradient_destination: the destination ", dest.str(),
             " must be a contiguous float32 tensor shaped as the leaf ", leaf.str(),
             ", on its device, outside its memory");
  m.grad_destination = std::make_unique<Tensor>(dest);
  m.grad_destination_scale = scale;
  g_any_marked.store(true, std::memory_order_relaxed);
}

bool gradient_went_to_destination(const Tensor& leaf) {
  return leaf.defined() && leaf.impl()->autograd && leaf.impl()->autograd->grad_destination_written;
}

GradientTarget gradient_target(const Tensor& leaf) {
  if (!t_pass || !leaf.defined() || !leaf.impl()->autograd) return {};
  const AutogradMeta& m = *leaf.impl()->autograd;
  if (m.grad_fn || !m.requires_grad || (m.grad && m.grad->defined())) return {};
  if (leaf.dtype() != kFloat32 || !leaf.is_contiguous()) return {};
  auto acc = m.grad_accumulator.lock();
  if (!acc || t_pass->sole_accumulators.count(acc.get()) == 0) return {};
  if (m.grad_overwrites_values && !t_pass->retain_graph) return {leaf.detach(), 1.0f};
  if (m.grad_destination) return {*m.grad_destination, m.grad_destination_scale};
  return {};
}

namespace detail {
void set_current_pass(const PassInfo* pass) { t_pass = pass; }
const PassInfo* current_pass() { return t_pass; }
bool any_marked_leaves() { return g_any_marked.load(std::memory_order_relaxed); }
bool wants_sole_gradient(const AutogradMeta& m) {
  return m.grad_overwrites_values || m.grad_destination != nullptr;
}
}  // namespace detail

}  // namespace autograd
}  // namespace weft
