// FSDP's internals: a unit's flat parameters (FlatParam) and the unit's state machine, driven by
// the forward hooks fully_shard installs, an autograd node on the unit's outputs and the
// parameters' post-accumulate-grad hooks. See Note [FSDP parameter lifecycle].
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "weft/distributed/fsdp/fully_shard.h"

namespace weft::dist::fsdp {

// One parameter of a unit: where its values sit in the unit's flat buffer.
struct ParamSlot {
  std::string name;  // relative to the unit's module
  Tensor param;      // the module's own parameter (its impl views FlatParam::full)
  Shape shape;
  int64_t offset = 0, numel = 0;
};

// The parameters of one unit that share requires_grad, flattened.
struct FlatParam {
  std::vector<ParamSlot> slots;
  bool trainable = true;
  int64_t numel = 0, padded = 0, shard_numel = 0;
  Tensor shard;                   // float32 (shard_numel,): this rank's part, a leaf
  std::shared_ptr<Storage> full;  // the gathered buffer in the compute dtype; 0 bytes when freed
  DType compute_dtype = kFloat32;
  std::shared_ptr<Work> gather;  // in flight while unsharding
  Tensor gather_input;           // the shard cast to the compute dtype, alive while gathering
  int grads_ready = 0;           // post-accumulate-grad hooks fired in this backward
  bool reduced = false;          // this backward's gradients were handled
  Tensor accumulated;            // no_sync: unsharded gradients summed over backward passes
  std::shared_ptr<Work> reduce;  // the reduce-scatter in flight
  Tensor reduce_input, reduce_output;
  Tensor full_tensor() const;  // (padded,) over `full`
};

struct RootState;

enum class ShardState { Sharded, Unsharding, Unsharded };

class FSDPUnit : public std::enable_shared_from_this<FSDPUnit> {
 public:
  FSDPUnit(nn::Module& module, FSDPOptions options);
  ~FSDPUnit();
  void init(const std::vector<std::pair<std::string, Tensor>>& params);

  // Issues the all-gather (no-op unless sharded); wait_unshard() completes it.
  void unshard();
  void wait_unshard();
  void reshard();

  void pre_forward();
  // Under a param_dtype, the forward's floating inputs cast to it (nullopt: unchanged).
  std::optional<std::vector<Tensor>> cast_inputs(const std::vector<Tensor>& in) const;
  std::vector<Tensor> post_forward(const std::vector<Tensor>& outputs);
  void pre_backward();
  void on_grad_ready(size_t flat, size_t slot);
  // Reduce-scatters `fp`'s gradients (or, under no_sync, keeps their sum). reuse_params: the
  // unit's parameters are done with, and their gathered memory holds the flat gradient.
  void post_backward(FlatParam& fp, bool reuse_params);
  // Waits for this unit's reduce-scatters and adds them into the shards' gradients.
  void finish_reduce();
  // At the end of backward (the root's queued callback): reduce what no hook reduced, then wait
  // for every reduce-scatter, free the parameters and reset the per-backward state.
  void reduce_leftovers();
  void end_of_backward();

  std::vector<Tensor> shards() const;
  nn::Module& module() const { return *module_; }
  ProcessGroup& group() const { return *group_; }
  std::vector<FlatParam>& flat() { return flat_; }
  FSDPOptions& options() { return options_; }
  bool requires_sync = true;
  std::shared_ptr<RootState> root;  // set at the root's first forward
  bool is_root = false;
  bool forward_ran = false;
  ShardState state = ShardState::Sharded;

 private:
  void queue_end_of_backward();
  void prefetch(int step);
  nn::Module* module_;
  FSDPOptions options_;
  std::shared_ptr<ProcessGroup> group_;
  std::vector<FlatParam> flat_;
  std::vector<nn::RemovableHandle> hook_handles_;
  std::vector<std::pair<Tensor, int>> grad_hooks_;
};

// Shared by the units under one root: the order units ran forward in, and per-backward state.
struct RootState {
  std::vector<FSDPUnit*> units;          // every unit in the root's tree
  std::vector<FSDPUnit*> forward_order;  // first use, recorded in the first iteration
  bool order_known = false;
  bool callback_queued = false;
  FSDPUnit* reducing = nullptr;  // the unit whose reduce-scatter was issued last
};

// The unit of a module (registry kept by fully_shard.cpp).
std::shared_ptr<FSDPUnit> unit_of(const nn::Module& m);
// Units of `root`'s tree in depth-first order, root first.
std::vector<std::shared_ptr<FSDPUnit>> units_under(nn::Module& root);

}  // namespace weft::dist::fsdp
