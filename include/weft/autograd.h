// Reverse-mode autograd: a dynamic graph of Nodes recorded by differentiable ops, and the
// engine that runs it backward on the calling thread.
//
// Post-accumulate-grad hooks (DDP's bucketing stands on them): a hook registered on a leaf
// fires once per backward pass, right after that leaf's .grad has been accumulated (so it
// sees the sum over every path to the leaf), before backward() returns. Thread: when the
// whole graph is on one device (always so under DDP), the thread that called backward();
// a graph spanning several devices (DataParallel) runs each device's nodes on a worker of
// its own, the caller serving the first root's device, and a hook runs on its leaf's. Order: the
// engine runs ready nodes latest-created first (PyTorch's sequence-number order) and runs a leaf's
// accumulation as soon as all of its incoming gradients are in, so hooks fire roughly in reverse
// order of use in the forward pass.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "weft/tensor.h"

namespace weft {

struct Edge {
  std::shared_ptr<Node> fn;
  uint32_t input_nr = 0;
  bool valid() const { return fn != nullptr; }
};

// One recorded operation: maps the gradients of its outputs to those of its inputs.
struct Node {
  Node();
  virtual ~Node() = default;
  // grads[i] is the gradient for output i (undefined if nothing flowed there).
  virtual std::vector<Tensor> apply(std::vector<Tensor>&& grads) = 0;
  virtual std::string name() const = 0;
  // Drop saved tensors after a backward without retain_graph.
  virtual void release() {}
  std::vector<Edge> next_edges;
  uint64_t sequence_nr;
  uint32_t num_outputs = 1;
  Device device;  // where its outputs live; the engine runs it on that device's worker
};

// Sink for a leaf: adds the incoming gradient into leaf.grad, then fires its hooks.
struct AccumulateGrad : Node {
  explicit AccumulateGrad(Tensor leaf);
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override;
  std::string name() const override { return "AccumulateGrad"; }
  Tensor leaf;
};

// A node whose backward is a closure; released closures make a second backward fail loudly.
struct FunctionNode : Node {
  using Fn = std::function<std::vector<Tensor>(std::vector<Tensor>&)>;
  FunctionNode(std::string name, Fn fn) : name_(std::move(name)), fn_(std::move(fn)) {}
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override;
  std::string name() const override { return name_; }
  void release() override {
    fn_ = nullptr;
    saved_.clear();
  }
  // Remembers the versions of the tensors the closure reads, checked before it runs.
  void save_versions(const std::vector<Tensor>& saved);

 private:
  // The storage, not the tensor: a saved output's impl points back at this node.
  struct Saved {
    std::shared_ptr<Storage> storage;
    uint32_t version;
    Shape sizes;
    DType dtype;
  };
  std::string name_;
  Fn fn_;
  std::vector<Saved> saved_;
};

// Grad mode is thread-local, as in PyTorch.
struct GradMode {
  static bool is_enabled();
  static void set_enabled(bool enabled);
};

class NoGradGuard {
 public:
  NoGradGuard() : prev_(GradMode::is_enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

namespace autograd {

// The edge a gradient for `t` must flow into: its grad_fn, its accumulator, or none.
Edge gradient_edge(const Tensor& t);
// Makes `t` a non-leaf output of `edge.fn` (DataParallel replicas route gradients this way).
void set_gradient_edge(Tensor& t, Edge edge);
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
// Records `outputs` as produced by a FunctionNode over `inputs` if grad mode is on and any
// input requires grad. The closure gets one gradient per output and returns one per input
// (undefined for inputs that need none). `saved` lists the tensors the closure reads (inputs,
// outputs, or views of them; undefined entries are skipped): if any is written in place before
// the backward runs, the backward fails naming it, as PyTorch's saved-variable version check.
void record(const std::string& name, std::initializer_list<const Tensor*> inputs,
            std::vector<Tensor*> outputs, FunctionNode::Fn backward,
            const std::vector<Tensor>& saved = {});
inline void record(const std::string& name, std::initializer_list<const Tensor*> inputs,
                   Tensor& output, FunctionNode::Fn backward,
                   const std::vector<Tensor>& saved = {}) {
  record(name, inputs, std::vector<Tensor*>{&output}, std::move(backward), saved);
}

// Runs the graph backward from `roots` seeded with `grads`.
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads,
              bool retain_graph = false);

// Called from inside a backward pass (e.g. from a hook): runs `fn` on the thread that
// called backward(), after every node of the pass has run and before backward() returns
// (PyTorch's queue_callback; DDP waits for its all-reduces there). An exception from `fn`
// propagates out of backward().
void queue_callback(std::function<void()> fn);
bool in_backward();

}  // namespace autograd
}  // namespace weft
