#include "distributed/tracked_group.h"

#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "distributed/desync.h"
#include "weft/distributed/debug.h"
#include "weft/distributed/gloo/process_group_gloo.h"

namespace weft::dist::detail {

namespace {

// The backend's Work; a timed-out wait becomes the group's desync report. A wait shorter than
// the group's timeout is a poll (the op may still finish) and fails as it is.
class TrackedWork : public Work {
 public:
  TrackedWork(std::shared_ptr<Work> inner, std::shared_ptr<CollectiveLog> log)
      : inner_(std::move(inner)), log_(std::move(log)) {}
  void wait(std::optional<Duration> timeout) override {
    try {
      inner_->wait(timeout);
    } catch (...) {
      if (timeout && *timeout < log_->timeout()) throw;
      log_->fail(std::current_exception());
    }
  }
  bool is_completed() override { return inner_->is_completed(); }
  void then(std::function<void(std::exception_ptr)> fn) override { inner_->then(std::move(fn)); }

 private:
  std::shared_ptr<Work> inner_;
  std::shared_ptr<CollectiveLog> log_;
};

class TrackedGroup : public ProcessGroup {
 public:
  TrackedGroup(std::shared_ptr<ProcessGroup> inner, std::shared_ptr<ProcessGroup> fingerprints,
               std::shared_ptr<CollectiveLog> log)
      : ProcessGroup(inner->rank(), inner->size()),
        inner_(std::move(inner)),
        fingerprints_(std::move(fingerprints)),
        log_(std::move(log)) {
    timeout_ = inner_->timeout();
  }
  std::string backend_name() const override { return inner_->backend_name(); }
  ProcessGroup& backend() override { return inner_->backend(); }
  void set_timeout(Duration t) override {
    timeout_ = t;
    inner_->set_timeout(t);
    if (fingerprints_ && fingerprints_ != inner_) fingerprints_->set_timeout(t);
    log_->set_timeout(t);
  }

  Tensor empty_symmetric(const Shape& shape, DType dtype) override {
    return inner_->empty_symmetric(shape, dtype);
  }
  std::shared_ptr<Work> allreduce(std::vector<Tensor> tensors, ReduceOp op) override {
    return run(OpRecord::of(OpKind::ALLREDUCE, tensors, static_cast<int>(op)),
               [&] { return inner_->allreduce(std::move(tensors), op); });
  }
  std::shared_ptr<Work> allreduce_into(Tensor output, Tensor input, ReduceOp op) override {
    // Recorded as the all-reduce of input: every rank's fingerprint of the op is the same.
    return run(OpRecord::of(OpKind::ALLREDUCE, {input}, static_cast<int>(op)),
               [&] { return inner_->allreduce_into(std::move(output), std::move(input), op); });
  }
  std::shared_ptr<Work> broadcast(std::vector<Tensor> tensors, int root) override {
    return run(OpRecord::of(OpKind::BROADCAST, tensors, -1, root),
               [&] { return inner_->broadcast(std::move(tensors), root); });
  }
  std::shared_ptr<Work> allgather(std::vector<Tensor> outputs, Tensor input) override {
    return run(OpRecord::of(OpKind::ALLGATHER, {input}),
               [&] { return inner_->allgather(std::move(outputs), std::move(input)); });
  }
  std::shared_ptr<Work> reduce_scatter(Tensor output, std::vector<Tensor> inputs,
                                       ReduceOp op) override {
    return run(OpRecord::of(OpKind::REDUCE_SCATTER, {output}, static_cast<int>(op)),
               [&] { return inner_->reduce_scatter(std::move(output), std::move(inputs), op); });
  }
  std::shared_ptr<Work> barrier() override {
    return run(OpRecord::of(OpKind::BARRIER, {}), [&] { return inner_->barrier(); });
  }
  std::shared_ptr<Work> reduce(std::vector<Tensor> tensors, int root, ReduceOp op) override {
    return run(OpRecord::of(OpKind::REDUCE, tensors, static_cast<int>(op), root),
               [&] { return inner_->reduce(std::move(tensors), root, op); });
  }
  std::shared_ptr<Work> gather(std::vector<Tensor> outputs, Tensor input, int root) override {
    return run(OpRecord::of(OpKind::GATHER, {input}, -1, root),
               [&] { return inner_->gather(std::move(outputs), std::move(input), root); });
  }
  std::shared_ptr<Work> scatter(Tensor output, std::vector<Tensor> inputs, int root) override {
    return run(OpRecord::of(OpKind::SCATTER, {output}, -1, root),
               [&] { return inner_->scatter(std::move(output), std::move(inputs), root); });
  }
  std::shared_ptr<Work> allgather_into_tensor(Tensor output, Tensor input) override {
    return run(OpRecord::of(OpKind::ALLGATHER_INTO_TENSOR, {input}),
               [&] { return inner_->allgather_into_tensor(std::move(output), std::move(input)); });
  }
  std::shared_ptr<Work> reduce_scatter_tensor(Tensor output, Tensor input, ReduceOp op) override {
    return run(OpRecord::of(OpKind::REDUCE_SCATTER_TENSOR, {output}, static_cast<int>(op)), [&] {
      return inner_->reduce_scatter_tensor(std::move(output), std::move(input), op);
    });
  }
  std::shared_ptr<Work> alltoall_base(Tensor output, Tensor input, std::vector<int64_t> out_splits,
                                      std::vector<int64_t> in_splits) override {
    return run(dtype_only(OpKind::ALLTOALL_BASE, input), [&] {
      return inner_->alltoall_base(std::move(output), std::move(input), std::move(out_splits),
                                   std::move(in_splits));
    });
  }
  std::shared_ptr<Work> alltoall(std::vector<Tensor> outputs, std::vector<Tensor> inputs) override {
    return run(dtype_only(OpKind::ALLTOALL, inputs.empty() ? Tensor() : inputs[0]),
               [&] { return inner_->alltoall(std::move(outputs), std::move(inputs)); });
  }
  // Point-to-point ops are not collectives: they take no sequence number (as in PyTorch's
  // wrapper); the backend's Work names the op and the peer when it fails.
  std::shared_ptr<Work> send(std::vector<Tensor> tensors, int dst, int tag) override {
    return inner_->send(std::move(tensors), dst, tag);
  }
  std::shared_ptr<Work> recv(std::vector<Tensor> tensors, int src, int tag) override {
    return inner_->recv(std::move(tensors), src, tag);
  }
  void monitored_barrier(std::optional<Duration> timeout, bool wait_all_ranks) override {
    inner_->monitored_barrier(timeout, wait_all_ranks);
  }

 private:
  // Note [Collective sequence numbers]: numbered and recorded under the issue lock, so that the
  // numbers follow the order the backend runs the ops in. A call refused for its arguments never
  // ran and gives its number back; a timeout keeps it (this rank did reach the collective).
  template <typename Issue>
  std::shared_ptr<Work> run(const OpRecord& op, Issue&& issue) {
    std::shared_ptr<Work> inner;
    std::exception_ptr error;
    int64_t seq = 0;
    {
      std::lock_guard<std::mutex> lock(issue_mu_);
      seq = log_->next();
      log_->record(seq, op);
      try {
        if (fingerprints_) check_fingerprints(seq, op);
        inner = issue();
      } catch (...) {
        error = std::current_exception();
        if (!is_timeout(error)) log_->unrecord(seq);
      }
    }
    if (error) log_->fail(error);  // a timeout's report; any other error as it is
    inner->then([log = log_, seq](std::exception_ptr e) {
      if (!e) log->completed(seq);
    });
    return std::make_shared<TrackedWork>(std::move(inner), log_);
  }

  void check_fingerprints(int64_t seq, const OpRecord& op);

  // What alltoall's ranks agree on: the op and the dtype (their splits differ).
  static OpRecord dtype_only(OpKind kind, const Tensor& t) {
    OpRecord r = OpRecord::of(kind, {});
    if (t.defined()) r.dtype = static_cast<int8_t>(t.dtype());
    return r;
  }

  std::shared_ptr<ProcessGroup> inner_;
  std::shared_ptr<ProcessGroup> fingerprints_;  // DETAIL only: where fingerprints are gathered
  std::shared_ptr<CollectiveLog> log_;
  std::mutex issue_mu_;
};

// DETAIL: every rank's fingerprint of collective #seq, gathered through the backend (a helper
// Gloo group for NCCL); any rank that differs from rank 0 fails the call on every rank, before
// the collective runs, with the same message.
void TrackedGroup::check_fingerprints(int64_t seq, const OpRecord& op) {
  const auto fp = op.fingerprint(seq);
  const int64_t len = static_cast<int64_t>(fp.size());
  Tensor mine = make_empty({len}, kInt64);
  std::memcpy(mine.raw_data(), fp.data(), sizeof fp);
  std::vector<Tensor> all;
  for (int r = 0; r < size_; ++r) all.push_back(make_empty({len}, kInt64));
  fingerprints_->allgather(all, mine)->wait();
  auto fp_of = [&](int r) { return static_cast<const int64_t*>(all[r].raw_data()); };
  auto same = [&](int r) { return std::memcmp(fp_of(r), fp_of(0), sizeof fp) == 0; };
  // Ranks that differ from rank 0, grouped by what they called.
  std::map<std::string, std::vector<int>> calls;
  for (int r = 1; r < size_; ++r) {
    if (same(r)) continue;
    std::string what = OpRecord::from_fingerprint(fp_of(r)).describe();
    if (fp_of(r)[1] != fp_of(0)[1]) what += " as its collective #" + std::to_string(fp_of(r)[1]);
    calls[what].push_back(r);
  }
  if (calls.empty()) return;
  std::string msg = "weft.dist: collective #" + std::to_string(fp_of(0)[1]) + " of group " +
                    std::to_string(log_->group_id()) +
                    " mismatch (WEFT_DISTRIBUTED_DEBUG=DETAIL): rank 0 called " +
                    OpRecord::from_fingerprint(fp_of(0)).describe();
  bool first = true;
  for (const auto& [what, ranks] : calls) {
    msg += first ? " but " : "; ";
    first = false;
    for (size_t i = 0; i < ranks.size(); ++i)
      msg += (i ? ", " : ranks.size() > 1 ? "ranks " : "rank ") + std::to_string(ranks[i]);
    msg += " called " + what;
  }
  WEFT_DIST_ERROR(msg);
}

}  // namespace

std::shared_ptr<ProcessGroup> track(std::shared_ptr<ProcessGroup> backend, int group_id,
                                    std::shared_ptr<Store> store, const std::string& master_addr) {
  if (!backend) return nullptr;
  std::shared_ptr<ProcessGroup> fingerprints;
  if (get_debug_level() == DebugLevel::DETAIL) {
    fingerprints = backend;
    if (backend->backend_name() == "nccl") {
      GlooOptions go;
      go.timeout = backend->timeout();
      fingerprints = std::make_shared<ProcessGroupGloo>(
          std::make_shared<PrefixStore>("detail", store), backend->rank(), backend->size(),
          resolve_gloo_options(go, master_addr));
    }
  }
  auto log = std::make_shared<CollectiveLog>(group_id, backend->rank(), backend->size(), store,
                                             backend->timeout());
  return std::make_shared<TrackedGroup>(std::move(backend), std::move(fingerprints),
                                        std::move(log));
}

}  // namespace weft::dist::detail
