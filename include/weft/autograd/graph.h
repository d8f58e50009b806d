// autograd's graph: the Nodes and Edges that differentiable ops record into (record(),
// gradient_edge()), AccumulateGrad at the leaves, and grad mode. This is the part of autograd
// the ops layer sees; the engine that runs a graph backward (weft/autograd/engine.h) sits
// above the ops. See Note [The gradient's path] in docs/ARCHITECTURE.md.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <unordered_set>
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

// Note [Gradient into the parameter's memory]: marks (or unmarks) a leaf whose owner does not
// read its values in a backward pass once the leaf's gradient is computed (FSDP's gathered
// parameters, whose memory becomes the gradient's anyway; docs/ARCHITECTURE.md).
void set_gradient_overwrites_values(const Tensor& leaf, bool on);
// Note [Gradient into a destination]: names where a backward formula may write `leaf`'s
// gradient, multiplied by `scale`, instead of into a buffer of its own (DDP's Reducer names each
// parameter's bucket slot for one synchronised backward). `dest` is float32, contiguous, shaped
// as the leaf, and does not overlap it; undefined removes the destination. Either way the leaf's
// gradient_went_to_destination() is reset.
void set_gradient_destination(const Tensor& leaf, const Tensor& dest, float scale = 1.0f);
// Whether the .grad AccumulateGrad last kept for `leaf` is the one a formula wrote into its
// destination (already multiplied by the destination's scale) since the destination was set.
bool gradient_went_to_destination(const Tensor& leaf);

// Where the running backward pass lets the formula computing `leaf`'s gradient write it, and by
// what it is to be multiplied there; `values` is undefined where the formula allocates its own.
// Only where the leaf is float32, contiguous, has no .grad yet and gets its gradient from exactly
// one formula in this pass; then either the leaf is marked by set_gradient_overwrites_values and
// the graph is not retained (values: the leaf's own memory, after the formula's last read of it),
// or it has a destination. The formula returns `values` as the gradient, which AccumulateGrad
// keeps as the .grad without copying.
struct GradientTarget {
  Tensor values;
  float scale = 1.0f;
};
GradientTarget gradient_target(const Tensor& leaf);

namespace detail {
// Set by the engine for the pass it runs on this thread: the accumulators of marked leaves that
// get exactly one gradient, and whether the graph is retained.
struct PassInfo {
  bool retain_graph = false;
  std::unordered_set<const Node*> sole_accumulators;
};
void set_current_pass(const PassInfo* pass);
const PassInfo* current_pass();
// Whether any leaf was ever marked or given a destination (else the engine skips its scan).
bool any_marked_leaves();
// Whether the engine counts this leaf's incoming gradients (marked, or with a destination).
bool wants_sole_gradient(const AutogradMeta& m);
}  // namespace detail

}  // namespace autograd
}  // namespace weft
