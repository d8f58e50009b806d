// Reducer: DistributedDataParallel's gradient machinery. Parameters are grouped into
// buckets (reverse registration order: a small first bucket, then bucket_cap bytes); each
// parameter's post-accumulate-grad hook copies its gradient into its bucket (unless backward
// wrote it there already: Note [Gradient into a destination]), and a bucket
// whose gradients are all in is all-reduced asynchronously at once, buckets always in
// index order so every rank issues the same collectives in the same order. A callback at
// the end of backward waits for them and writes the averaged gradients back. After the
// first iteration the buckets are rebuilt once in the order gradients really arrived
// (rank 0's order, broadcast, so that all ranks agree).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "weft/distributed/process_group.h"
#include "weft/tensor.h"

namespace weft::dist {

// One bucket as a communication hook sees it: `buffer` holds the (already divided by world
// size) gradients of `params`, flattened; the hook must leave the reduced result in buffer
// (unless it owns the gradients: Reducer::set_comm_hook). `padded` is buffer followed by zeros
// up to a multiple of the group's size, in the same storage (buffer is its start), as
// reduce_scatter_tensor takes it.
struct GradBucket {
  size_t index;
  Tensor buffer;
  std::vector<Tensor> params;
  bool is_last() const { return last; }
  bool last = false;
  Tensor padded;
};

// Starts the reduction of a bucket; the returned Work completes when buffer holds the
// result. The default is an all-reduce (SUM of pre-divided gradients = average).
using CommHook = std::function<std::shared_ptr<Work>(ProcessGroup&, GradBucket&)>;

struct ReducerOptions {
  size_t first_bucket_bytes = 1024 * 1024;
  size_t bucket_bytes = 25 * 1024 * 1024;
  bool find_unused_parameters = false;
  bool gradient_as_bucket_view = false;
  // The graph is the same every iteration: unused parameters are found by walking the
  // first iteration's graph and marked ready without a walk afterwards.
  bool static_graph = false;
};

class Reducer {
 public:
  Reducer(std::vector<Tensor> params, std::vector<std::string> names,
          std::shared_ptr<ProcessGroup> group, ReducerOptions options);
  ~Reducer();
  Reducer(const Reducer&) = delete;
  Reducer& operator=(const Reducer&) = delete;

  // Called by DDP's forward: the outputs let find_unused_parameters see which parameters
  // the graph reaches. Also checks that the previous iteration's reduction finished.
  void prepare_for_backward(const std::vector<Tensor>& outputs);
  // hook_owns_grads (ZeRO-2's hook, Note [ZeRO-2 gradient partition]): the hook takes the
  // reduced gradients where it wants them, so the buckets are not written back into .grad, and
  // each parameter's .grad is released (undefined) as soon as it is copied into its bucket.
  void set_comm_hook(CommHook hook, bool hook_owns_grads = false) {
    hook_ = std::move(hook);
    hook_owns_grads_ = hook_ && hook_owns_grads;
  }
  bool hook_owns_grads() const { return hook_owns_grads_; }
  // Where the parameters live; the Reducer's own collectives (flags, bucket orders) run there,
  // as NCCL moves device memory only.
  Device device() const { return params_.empty() ? Device::CPU() : params_[0].device(); }
  // A group of one with no communication hook and no bucket views: the all-reduce and the
  // average are the identity, so gradients stay where backward put them (no bucket copies).
  bool identity_reduction() const {
    return group_->size() == 1 && !hook_ && !options_.gradient_as_bucket_view;
  }
  // Join support: take part in one iteration's reductions with zero gradients, as a rank
  // that has run out of data.
  void reduce_zeros_as_joined();
  // Bucket layout as parameter indices (for tests and logging).
  std::vector<std::vector<size_t>> bucket_indices() const;
  // Bucket i's buffer padded to a multiple of the group's size (GradBucket::padded): the
  // gradients of bucket_indices()[i], flattened in that order, then zeros.
  Tensor padded_bucket(size_t i) const { return buckets_.at(i).padded; }
  // True once the buckets have their final layout (rebuilt after the first synchronised
  // backward, or after a join); before that the layout may still change.
  bool buckets_rebuilt() const { return buckets_rebuilt_; }
  const std::vector<Tensor>& parameters() const { return params_; }
  const std::vector<std::string>& parameter_names() const { return names_; }
  const ReducerOptions& options() const { return options_; }
  const ProcessGroup& process_group() const { return *group_; }

 private:
  struct Bucket {
    std::vector<size_t> params;    // indices into params_
    std::vector<int64_t> offsets;  // element offset of each param in buffer
    Tensor buffer;                 // the first elements of padded
    Tensor padded;
    std::vector<Tensor> slots;  // each parameter's part of buffer, shaped as the parameter
    Tensor out;  // this iteration's result, where it is reduced into a tensor of its own
    size_t pending = 0;
    std::shared_ptr<Work> work;
  };
  void build_buckets(const std::vector<size_t>& order);
  void on_grad_ready(size_t index);
  void mark_ready(size_t index, bool have_grad);
  void launch_ready_buckets();
  // At the end of backward: waits for the buckets and writes the averaged gradients back
  // (finalize_backward in PyTorch), then once rebuilds the buckets in arrival order.
  void finalize();
  [[noreturn]] void fail_unready();
  std::vector<bool> globally_used();
  void write_back_grads(const std::vector<bool>& globally_used);
  void rebuild_buckets();
  // Rank 0's bucket order (parameter indices), broadcast so that every rank builds the same.
  std::vector<size_t> agreed_order(const std::vector<int64_t>& order);
  void reset_iteration();
  void set_destinations();
  void clear_destinations();
  // WEFT_DISTRIBUTED_DEBUG=INFO (or DETAIL): the bucket layout, built and rebuilt, and the
  // parameters find_unused_parameters (or static_graph's walk) found unused, by name.
  void log_buckets(const std::string& how) const;
  void log_unused();

  std::vector<Tensor> params_;
  std::vector<std::string> names_;
  std::shared_ptr<ProcessGroup> group_;
  ReducerOptions options_;
  bool info_ = false;  // WEFT_DISTRIBUTED_DEBUG is INFO or DETAIL
  std::vector<size_t> logged_unused_;
  CommHook hook_;
  bool hook_owns_grads_ = false;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<size_t, size_t>> locator_;  // param -> (bucket, slot)
  std::vector<int> hook_ids_;
  std::vector<bool> ready_;
  std::vector<bool> used_;             // locally used this iteration
  std::vector<bool> had_grad_;         // .grad defined when this iteration's backward began
  std::vector<bool> static_used_;      // static_graph: the first iteration's used set
  std::vector<size_t> arrival_order_;  // first iteration's gradient order
  size_t next_bucket_ = 0;
  bool finalize_queued_ = false;
  bool expect_backward_ = false;
  bool buckets_rebuilt_ = false;
  bool destinations_set_ = false;
  int64_t iteration_ = 0;
};

}  // namespace weft::dist
