// fully_shard (PyTorch's FSDP2): each call makes one module a unit whose parameters are
// flattened into one float32 buffer, padded to a multiple of the world size and sharded evenly
// across the group. Around the unit's forward (and again before its backward) the shards are
// all-gathered and the module's parameters view the gathered buffer; afterwards its memory is
// freed. Gradients are reduce-scattered to the shards as soon as the unit's backward is done.
// Apply bottom-up (blocks first, then the root). Invariants: Note [FSDP parameter lifecycle].
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "weft/distributed/checkpoint.h"
#include "weft/distributed/process_group.h"
#include "weft/nn/module.h"
#include "weft/optim/optimizer.h"

namespace weft::dist::fsdp {

// Mixed precision (PyTorch's MixedPrecisionPolicy): parameters are gathered and computed in
// param_dtype (bf16/fp16; the unit's floating inputs are cast to it) while the shards stay
// float32 masters; gradients are reduce-scattered in reduce_dtype and reach the shards as
// float32. reduce_dtype defaults to float32 (PyTorch's to param_dtype): Gloo reduces float32
// only, and a 16-bit reduce_dtype needs NCCL.
struct MixedPrecisionPolicy {
  std::optional<DType> param_dtype;
  std::optional<DType> reduce_dtype;
};

struct FSDPOptions {
  std::shared_ptr<ProcessGroup> group = nullptr;  // nullptr: the default group
  // Default true: free the gathered parameters after the unit's forward and gather them again
  // before its backward. false keeps them from forward to the end of backward (more memory,
  // one all-gather less). The root unit never frees after forward (its backward comes first).
  bool reshard_after_forward = true;
  MixedPrecisionPolicy mp_policy = {};
  // Default true: while a unit computes, the next unit's all-gather (forward order in forward,
  // reverse in backward) is already issued, from the second iteration on.
  bool prefetch = true;
  // Memory against overlap in backward, where a rank holds most of its sharded gradients (the
  // peak). Per rank, a unit's backward holds one unit: its gathered parameters, over which its
  // float32 gradients are written (with both options off the peak is then within (parameters +
  // gradients + optimizer state) / N + the largest unit + activations); with both options on
  // (the default) it also holds the next unit's prefetched parameters and, until the unit's
  // first gradient, the previous unit's reduce-scatter (its input and output).
  // backward_prefetch = false: no all-gather is issued ahead in backward (each unit's is waited
  // for when its backward starts). overlap_reduce_scatter = false: a unit's
  // backward starts only after the previous unit's reduce-scatter has completed and its input is
  // freed. Forward and the results are unchanged.
  bool backward_prefetch = true;
  bool overlap_reduce_scatter = true;
};

class FSDPUnit;

// One FSDP unit (what fully_shard makes of a module): its shards and its controls.
class FSDPModule {
 public:
  explicit FSDPModule(std::shared_ptr<FSDPUnit> unit) : unit_(std::move(unit)) {}
  // The float32 shards of this unit and every unit nested in it (this rank's part): what an
  // optimizer steps, in place of module->parameters(). Frozen parameters' shards do not
  // require grad and get no gradient.
  std::vector<Tensor> parameters() const;
  // no_sync: with false, backward accumulates this unit's (and nested units') unsharded
  // gradients locally without communicating; the next backward with true reduces the sum.
  void set_requires_gradient_sync(bool sync, bool recurse = true);
  void set_reshard_after_forward(bool reshard, bool recurse = true);
  // Gathers / frees the parameters by hand (e.g. to read them outside forward).
  void unshard();
  void reshard();
  FSDPUnit& unit() const { return *unit_; }

 private:
  std::shared_ptr<FSDPUnit> unit_;
};

// Makes `module` an FSDP unit (collective: every rank calls it with the same module structure).
// Parameters already in a nested unit belong to that one. A parameter shared with another unit
// (tied across units) is refused, naming it; share it inside one unit instead. Every rank must
// start with the same parameter values (seed them alike, or load a state dict afterwards).
std::shared_ptr<FSDPModule> fully_shard(const std::shared_ptr<nn::Module>& module,
                                        FSDPOptions options = {});
// The unit fully_shard made of `module`, or nullptr.
std::shared_ptr<FSDPModule> fsdp_module(const nn::Module& module);
// The shards of every unit in `module`'s tree (module included).
std::vector<Tensor> parameters(const nn::Module& module);

// Clips the gradients of `shards` (FSDP shards) so that the norm over all ranks' shards together
// is at most max_norm (as torch.nn.utils.clip_grad_norm_ on the whole model). Collective over
// `group`. Returns the total norm before clipping.
double clip_grad_norm_(const std::vector<Tensor>& shards, double max_norm, double norm_type = 2.0,
                       std::shared_ptr<ProcessGroup> group = nullptr);

// The whole model's state dict (plain keys and shapes, as the unsharded module's) on rank 0;
// other ranks get an empty one unless rank0_only is false. Collective.
nn::StateDict full_state_dict(nn::Module& root, bool rank0_only = true);
// full_state_dict saved by rank 0 as one safetensors file that plain weft and PyTorch load.
void save_full_state_dict(nn::Module& root, const std::string& path);
// Loads an unsharded state dict (every rank passes the whole of it) into the shards and buffers.
void load_full_state_dict(nn::Module& root, const nn::StateDict& state);

// This rank's part of the model for distributed checkpoints: each parameter as a ShardedTensor
// of its flattened values (global shape (numel,)) viewing the shards, so checkpoint::load fills
// the shards in place at any world size; buffers as replicated tensors.
checkpoint::StateDict sharded_state_dict(nn::Module& root);
// The optimizer state for distributed checkpoints, likewise (torch's get_optimizer_state_dict
// under FSDP2): `state` is the state_dict() of an optimizer stepping fsdp::parameters(root) in
// that order; each tensor "state.<i>.<name>" (shard i's, shard-shaped: exp_avg,
// momentum_buffer, ...) becomes one entry per parameter in that shard, "<param key>.<name>", a
// ShardedTensor of the parameter's flattened state (global shape (numel,)) viewing the tensor.
// Loading into entries made from zero tensors of the shards' shapes fills them in place at any
// world size (padding stays zero); the scalars ("state.<i>.step", ...) do not depend on it.
checkpoint::StateDict sharded_optimizer_entries(nn::Module& root,
                                                const optim::OptimizerState& state);
void save_sharded(nn::Module& root, const std::string& dir);
void load_sharded(nn::Module& root, const std::string& dir);

}  // namespace weft::dist::fsdp
