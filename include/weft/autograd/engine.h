// The backward engine: runs a recorded graph (weft/autograd/graph.h) from its roots.
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

#include <functional>
#include <vector>

#include "weft/autograd/graph.h"

namespace weft::autograd {

// Runs the graph backward from `roots` seeded with `grads`.
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads,
              bool retain_graph = false);

// Called from inside a backward pass (e.g. from a hook): runs `fn` on the thread that
// called backward(), after every node of the pass has run and before backward() returns
// (PyTorch's queue_callback; DDP waits for its all-reduces there). An exception from `fn`
// propagates out of backward().
void queue_callback(std::function<void()> fn);

}  // namespace weft::autograd
