// The backward engine: counts dependencies from the roots, then runs nodes whose inputs
// are complete, latest-created first; AccumulateGrad nodes jump the queue (so DDP hooks
// fire as early as possible). Runs on the caller's thread.
#include <atomic>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "weft/autograd.h"
#include "weft/ops.h"

namespace weft {

namespace {
std::atomic<uint64_t> g_sequence{0};
thread_local bool g_grad_enabled = true;
}  // namespace

Node::Node() : sequence_nr(g_sequence.fetch_add(1, std::memory_order_relaxed)) {}

bool GradMode::is_enabled() { return g_grad_enabled; }
void GradMode::set_enabled(bool e) { g_grad_enabled = e; }

std::vector<Tensor> FunctionNode::apply(std::vector<Tensor>&& grads) {
  WEFT_CHECK(fn_, "Trying to backward through the graph a second time (through ", name_,
             "): its saved tensors were freed. Pass retain_graph=true to the first backward.");
  return fn_(grads);
}

AccumulateGrad::AccumulateGrad(Tensor l) : leaf(std::move(l)) {
  sequence_nr = UINT64_MAX;  // run as soon as ready
}

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
    slot = unique ? g.detach() : g.clone();
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
            std::vector<Tensor*> outputs, FunctionNode::Fn backward) {
  if (!any_requires_grad(inputs)) return;
  auto node = std::make_shared<FunctionNode>(name, std::move(backward));
  node->next_edges.reserve(inputs.size());
  for (const Tensor* t : inputs) node->next_edges.push_back(t ? gradient_edge(*t) : Edge{});
  node->num_outputs = (uint32_t)outputs.size();
  for (uint32_t i = 0; i < outputs.size(); ++i)
    if (outputs[i] && outputs[i]->defined()) set_gradient_edge(*outputs[i], {node, i});
}

void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads,
              bool retain_graph) {
  WEFT_CHECK(roots.size() == grads.size(), "backward: ", roots.size(), " roots but ",
             grads.size(), " gradients");
  struct Pending {
    std::vector<Tensor> grads;
    int deps = 0;
  };
  std::unordered_map<Node*, Pending> pending;
  std::vector<std::shared_ptr<Node>> root_nodes;
  std::vector<std::pair<Edge, Tensor>> seeds;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    WEFT_CHECK(r.requires_grad(),
               "element ", i, " of tensors does not require grad and does not have a grad_fn");
    Tensor g = grads[i];
    if (!g.defined()) {
      WEFT_CHECK(r.numel() == 1, "grad can be implicitly created only for scalar outputs, got ",
                 r.str());
      g = ones(r.sizes());
    } else {
      WEFT_CHECK(g.sizes() == r.sizes(), "backward: gradient ", g.str(), " does not match ",
                 r.str());
    }
    seeds.emplace_back(gradient_edge(r), g);
  }
  // Count dependencies over the reachable graph.
  std::vector<Node*> stack;
  std::unordered_set<Node*> seen;
  for (auto& [e, g] : seeds)
    if (seen.insert(e.fn.get()).second) stack.push_back(e.fn.get());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next_edges) {
      if (!e.valid()) continue;
      pending[e.fn.get()].deps++;
      if (seen.insert(e.fn.get()).second) stack.push_back(e.fn.get());
    }
  }
  auto cmp = [](const std::shared_ptr<Node>& a, const std::shared_ptr<Node>& b) {
    return a->sequence_nr < b->sequence_nr;
  };
  std::priority_queue<std::shared_ptr<Node>, std::vector<std::shared_ptr<Node>>, decltype(cmp)>
      ready(cmp);
  auto add_grad = [&](Pending& p, const Edge& e, Tensor g) {
    if (p.grads.size() < e.fn->num_outputs) p.grads.resize(e.fn->num_outputs);
    Tensor& slot = p.grads[e.input_nr];
    if (!g.defined()) return;
    if (!slot.defined()) slot = std::move(g);
    else slot = slot + g;
  };
  for (auto& [e, g] : seeds) {
    Pending& p = pending[e.fn.get()];
    add_grad(p, e, g);
  }
  for (auto& [e, g] : seeds)
    if (pending[e.fn.get()].deps == 0 && seen.erase(e.fn.get())) ready.push(e.fn);
  NoGradGuard no_grad;  // gradients are not themselves recorded (no double backward)
  while (!ready.empty()) {
    std::shared_ptr<Node> node = ready.top();
    ready.pop();
    auto it = pending.find(node.get());
    std::vector<Tensor> in = std::move(it->second.grads);
    pending.erase(it);
    in.resize(node->num_outputs);
    std::vector<Tensor> out = node->apply(std::move(in));
    if (!retain_graph) node->release();
    WEFT_CHECK(out.size() == node->next_edges.size() || dynamic_cast<AccumulateGrad*>(node.get()),
               node->name(), " returned ", out.size(), " gradients for ", node->next_edges.size(),
               " inputs");
    for (size_t i = 0; i < node->next_edges.size(); ++i) {
      const Edge& e = node->next_edges[i];
      if (!e.valid()) continue;
      Pending& p = pending[e.fn.get()];
      add_grad(p, e, i < out.size() ? std::move(out[i]) : Tensor());
      if (--p.deps == 0) ready.push(e.fn);
    }
  }
}

}  // namespace autograd
}  // namespace weft
