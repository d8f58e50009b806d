// The backward engine: counts dependencies from the roots, then runs nodes whose inputs
// are complete, latest-created first; AccumulateGrad nodes jump the queue (so DDP hooks
// fire as early as possible). Runs on the caller's thread.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <queue>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "weft/amp/autocast.h"
#include "weft/autograd.h"
#include "weft/cuda.h"
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

namespace {

// The running backward pass's final callbacks; workers of a multi-device pass share it.
thread_local std::vector<std::function<void()>>* t_callbacks = nullptr;

struct Pending {
  std::vector<Tensor> grads;
  int deps = 0;
};

void add_grad(Pending& p, const Edge& e, Tensor g) {
  if (p.grads.size() < e.fn->num_outputs) p.grads.resize(e.fn->num_outputs);
  Tensor& slot = p.grads[e.input_nr];
  if (!g.defined()) return;
  if (!slot.defined())
    slot = std::move(g);
  else
    slot = slot + g;
}

std::vector<Tensor> run_node(Node& node, std::vector<Tensor>&& in, bool retain_graph) {
  in.resize(node.num_outputs);
  std::vector<Tensor> out = node.apply(std::move(in));
  if (!retain_graph) node.release();
  WEFT_CHECK(out.size() == node.next_edges.size() || dynamic_cast<AccumulateGrad*>(&node),
             node.name(), " returned ", out.size(), " gradients for ", node.next_edges.size(),
             " inputs");
  return out;
}

struct ByPriority {
  bool operator()(const std::shared_ptr<Node>& a, const std::shared_ptr<Node>& b) const {
    return a->sequence_nr < b->sequence_nr;
  }
};
using ReadyQueue =
    std::priority_queue<std::shared_ptr<Node>, std::vector<std::shared_ptr<Node>>, ByPriority>;

// A graph whose nodes live on several devices: one worker per device (the caller serves
// the first root's), so DataParallel replicas' backward passes run concurrently.
void run_multi_device(std::unordered_map<Node*, Pending>& pending, std::vector<Device> devices,
                      std::vector<std::shared_ptr<Node>> ready_roots, size_t remaining,
                      bool retain_graph) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<ReadyQueue> queues(devices.size());
  auto queue_of = [&](const Node& n) {
    for (size_t i = 0; i < devices.size(); ++i)
      if (devices[i] == n.device) return i;
    return size_t(0);
  };
  for (auto& r : ready_roots) queues[queue_of(*r)].push(r);
  std::exception_ptr error;
  const int caller_threads = get_num_threads();
  const int per_worker = std::max(1, caller_threads / (int)devices.size());
  auto* callbacks = t_callbacks;
#ifdef WEFT_WITH_CUDA
  // The workers queue their kernels on the caller's current streams (on which the forward ran,
  // parallel_apply's replicas included), not on the default streams a fresh thread starts with.
  const std::vector<cuda::Stream> streams = cuda::current_streams();
#endif
  auto worker = [&](size_t qi) {
    t_callbacks = callbacks;
#ifdef WEFT_WITH_CUDA
    cuda::set_current_streams(streams);
#endif
    DeviceGuard dg(devices[qi]);
    NoGradGuard ng;
    set_num_threads(per_worker);
    while (true) {
      std::shared_ptr<Node> node;
      std::vector<Tensor> in;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return !queues[qi].empty() || remaining == 0 || error; });
        if (error || remaining == 0) return;
        node = queues[qi].top();
        queues[qi].pop();
        auto it = pending.find(node.get());
        in = std::move(it->second.grads);
        pending.erase(it);
      }
      std::vector<Tensor> out;
      try {
        out = run_node(*node, std::move(in), retain_graph);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu);
        if (!error) error = std::current_exception();
        cv.notify_all();
        return;
      }
      std::lock_guard<std::mutex> lk(mu);
      for (size_t i = 0; i < node->next_edges.size(); ++i) {
        const Edge& e = node->next_edges[i];
        if (!e.valid()) continue;
        Pending& p = pending[e.fn.get()];
        add_grad(p, e, i < out.size() ? std::move(out[i]) : Tensor());
        if (--p.deps == 0) queues[queue_of(*e.fn)].push(e.fn);
      }
      --remaining;
      cv.notify_all();
    }
  };
  std::vector<std::thread> threads;
  for (size_t i = 1; i < devices.size(); ++i) threads.emplace_back(worker, i);
  worker(0);
  for (auto& t : threads) t.join();
  set_num_threads(caller_threads);
  if (error) std::rethrow_exception(error);
}

}  // namespace

void queue_callback(std::function<void()> fn) {
  WEFT_CHECK(t_callbacks, "queue_callback can only be called during a backward pass");
  t_callbacks->push_back(std::move(fn));
}

bool in_backward() { return t_callbacks != nullptr; }

namespace {
void run_graph(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads,
               bool retain_graph);
}

void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads,
              bool retain_graph) {
  std::vector<std::function<void()>> callbacks;
  auto* outer = t_callbacks;
  t_callbacks = &callbacks;
  struct Restore {
    std::vector<std::function<void()>>* prev;
    ~Restore() { t_callbacks = prev; }
  } restore{outer};
  run_graph(roots, grads, retain_graph);
  // Callbacks may queue more callbacks; run until none are left.
  for (size_t i = 0; i < callbacks.size(); ++i) {
    auto fn = std::move(callbacks[i]);
    fn();
  }
}

namespace {
void run_graph(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads,
               bool retain_graph) {
  WEFT_CHECK(roots.size() == grads.size(), "backward: ", roots.size(), " roots but ", grads.size(),
             " gradients");
  std::unordered_map<Node*, Pending> pending;
  std::vector<std::pair<Edge, Tensor>> seeds;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    WEFT_CHECK(r.requires_grad(), "element ", i,
               " of tensors does not require grad and does not have a grad_fn");
    Tensor g = grads[i];
    if (!g.defined()) {
      WEFT_CHECK(r.numel() == 1, "grad can be implicitly created only for scalar outputs, got ",
                 r.str());
      g = ones(r.sizes(), {.dtype = r.dtype(), .device = r.device()});
    } else {
      WEFT_CHECK(g.sizes() == r.sizes(), "backward: gradient ", g.str(), " does not match ",
                 r.str());
      // PyTorch casts a seed of another floating dtype to the root's (validate_outputs).
      if (g.dtype() != r.dtype() && is_floating_point(g.dtype()) && is_floating_point(r.dtype()))
        g = g.to(r.dtype());
    }
    seeds.emplace_back(gradient_edge(r), g);
  }
  // Count dependencies over the reachable graph and note the devices it spans.
  std::vector<Node*> stack;
  std::unordered_set<Node*> seen;
  std::vector<Device> devices{seeds[0].first.fn->device};
  for (auto& [e, g] : seeds)
    if (seen.insert(e.fn.get()).second) stack.push_back(e.fn.get());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    if (std::find(devices.begin(), devices.end(), n->device) == devices.end())
      devices.push_back(n->device);
    for (const Edge& e : n->next_edges) {
      if (!e.valid()) continue;
      pending[e.fn.get()].deps++;
      if (seen.insert(e.fn.get()).second) stack.push_back(e.fn.get());
    }
  }
  const size_t total = seen.size();
  for (auto& [e, g] : seeds) add_grad(pending[e.fn.get()], e, g);
  std::vector<std::shared_ptr<Node>> ready_roots;
  for (auto& [e, g] : seeds)
    if (pending[e.fn.get()].deps == 0 && seen.erase(e.fn.get())) ready_roots.push_back(e.fn);
  NoGradGuard no_grad;  // gradients are not themselves recorded (no double backward)
  // Each backward formula computes in its forward's dtypes, whatever autocast region is open.
  amp::AutocastSuspend no_autocast;
  if (devices.size() > 1) {
    run_multi_device(pending, devices, std::move(ready_roots), total, retain_graph);
    return;
  }
  // The graph's device is current while its nodes run, so that a backward formula's fresh
  // tensors (zeros(shape) and the like) land beside its inputs, on a GPU as on a CPU device.
  std::optional<DeviceGuard> on_device;
  if (!devices.empty()) on_device.emplace(devices[0]);
  ReadyQueue ready;
  for (auto& r : ready_roots) ready.push(r);
  while (!ready.empty()) {
    std::shared_ptr<Node> node = ready.top();
    ready.pop();
    auto it = pending.find(node.get());
    std::vector<Tensor> in = std::move(it->second.grads);
    pending.erase(it);
    std::vector<Tensor> out = run_node(*node, std::move(in), retain_graph);
    for (size_t i = 0; i < node->next_edges.size(); ++i) {
      const Edge& e = node->next_edges[i];
      if (!e.valid()) continue;
      Pending& p = pending[e.fn.get()];
      add_grad(p, e, i < out.size() ? std::move(out[i]) : Tensor());
      if (--p.deps == 0) ready.push(e.fn);
    }
  }
}

}  // namespace

}  // namespace autograd
}  // namespace weft
