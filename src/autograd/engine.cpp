// The backward engine: counts dependencies from the roots, then runs nodes whose inputs
// are complete, latest-created first; AccumulateGrad nodes jump the queue (so DDP hooks
// fire as early as possible). A graph on one device runs on the caller's thread; a graph
// spanning several devices gets a worker thread per further device (the caller serves the
// first root's). DDP's overlap depends on this order: see Note [The gradient's path] in
// docs/ARCHITECTURE.md.
#include "weft/autograd/engine.h"

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
#include "weft/cuda.h"
#include "weft/ops.h"

namespace weft::autograd {

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

// Hands a finished node's output gradients to the nodes its edges lead to; `on_ready` gets each
// one whose last incoming gradient has now arrived.
template <typename OnReady>
void propagate(const Node& node, std::vector<Tensor>& out,
               std::unordered_map<Node*, Pending>& pending, OnReady on_ready) {
  for (size_t i = 0; i < node.next_edges.size(); ++i) {
    const Edge& e = node.next_edges[i];
    if (!e.valid()) continue;
    Pending& p = pending[e.fn.get()];
    add_grad(p, e, i < out.size() ? std::move(out[i]) : Tensor());
    if (--p.deps == 0) on_ready(e.fn);
  }
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
  const detail::PassInfo* pass = detail::current_pass();
  // The workers queue their kernels on the caller's current streams (on which the forward ran,
  // parallel_apply's replicas included), not on the default streams a fresh thread starts with.
  const std::vector<cuda::Stream> streams = cuda::current_streams();
  auto worker = [&](size_t qi) {
    t_callbacks = callbacks;
    detail::set_current_pass(pass);
    cuda::set_current_streams(streams);
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
      propagate(*node, out, pending, [&](const auto& fn) { queues[queue_of(*fn)].push(fn); });
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
// Each root's edge with its seed gradient: the given one (cast to the root's floating dtype, as
// PyTorch's validate_outputs), or ones for a scalar root.
std::vector<std::pair<Edge, Tensor>> seed_roots(const std::vector<Tensor>& roots,
                                                const std::vector<Tensor>& grads) {
  WEFT_CHECK(roots.size() == grads.size(), "backward: ", roots.size(), " roots but ", grads.size(),
             " gradients");
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
  return seeds;
}

using detail::PassInfo;

// The accumulators of leaves marked by set_gradient_overwrites_values, or given a destination,
// that get exactly one gradient in this pass (Note [Gradient into the parameter's memory],
// Note [Gradient into a destination]).
PassInfo pass_info(const std::unordered_map<Node*, Pending>& pending, bool retain_graph) {
  PassInfo pass;
  pass.retain_graph = retain_graph;
  if (!detail::any_marked_leaves()) return pass;
  for (const auto& [node, p] : pending) {
    if (p.deps != 1) continue;
    const auto* acc = dynamic_cast<const AccumulateGrad*>(node);
    if (acc && acc->leaf.impl()->autograd &&
        detail::wants_sole_gradient(*acc->leaf.impl()->autograd))
      pass.sole_accumulators.insert(acc);
  }
  return pass;
}

// Installs a pass's info on this thread for as long as it runs (nested passes restore theirs).
struct CurrentPass {
  const PassInfo* prev;
  explicit CurrentPass(const PassInfo* p) : prev(detail::current_pass()) {
    detail::set_current_pass(p);
  }
  ~CurrentPass() { detail::set_current_pass(prev); }
};

void run_graph(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads,
               bool retain_graph) {
  std::vector<std::pair<Edge, Tensor>> seeds = seed_roots(roots, grads);
  std::unordered_map<Node*, Pending> pending;
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
  PassInfo pass = pass_info(pending, retain_graph);
  CurrentPass current(&pass);
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
    propagate(*node, out, pending, [&](const auto& fn) { ready.push(fn); });
  }
}

}  // namespace

}  // namespace weft::autograd

namespace weft {
// Tensor::backward (declared with the tensor) is the engine's entry point.
void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  autograd::backward({*this}, {gradient}, retain_graph);
}
}  // namespace weft
