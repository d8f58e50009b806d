// Internal: ProcessGroupGloo's all-reduce for ranks that share a host
// (Note [Shared-memory all-reduce] in docs/ARCHITECTURE.md). One host: through its segment alone.
// Several: reduce within each host through its segment, all-reduce among one leader per host over
// Gloo, broadcast within each host. Results equal the Gloo path's bit for bit at two ranks on one
// host, within float rounding otherwise; every op ends within its timeout.
#pragma once

#include <gloo/context.h>
#include <gloo/transport/device.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "distributed/shm/rendezvous.h"
#include "distributed/shm/symmetric.h"
#include "weft/distributed/process_group.h"
#include "weft/distributed/store.h"

namespace weft::dist::detail {

class IntraHost {
 public:
  // Null, on every rank alike, when the group does not use shared memory (see shm::plan_hosts).
  // Leaders of several hosts connect among themselves on `device`, within `timeout`.
  static std::shared_ptr<IntraHost> connect(const std::shared_ptr<Store>& store, int rank, int size,
                                            const shm::Settings& settings,
                                            std::shared_ptr<gloo::transport::Device> device,
                                            Duration timeout);

  // In place over the whole group: float32, int64, fp16 or bf16, any ReduceOp. A contiguous
  // view into a symmetric tensor of a one-host group is reduced where it lies
  // (Note [Symmetric buffers]). With `out` (t's size, this process's memory) the result goes
  // there instead and t's contents are unspecified afterwards: a symmetric view's result is
  // folded straight into it, anything else copied. Note [All-reduce into a separate output].
  void allreduce(const Tensor& t, ReduceOp op, Duration timeout, void* out = nullptr);
  // One host only: a zero-filled tensor over this rank's buffer of a new SymmetricBuffer, made
  // collectively (run it where the group's ops run); undefined, on every rank alike, when the
  // host could not map one.
  Tensor empty_symmetric(const Shape& shape, DType dtype, Duration timeout);
  // Whether the whole group is on this host: then the segment serves reduce_scatter and
  // allgather too (between hosts those stay on Gloo: they have no hierarchical form here).
  bool one_host() const { return plan_.leaders.size() == 1; }
  // One host only; contiguous tensors of one dtype, `in` world times `out`'s elements.
  void reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op, Duration timeout);
  // One host only: rank `root`'s elements of `t` to every rank.
  void broadcast(const Tensor& t, int root, Duration timeout);
  // One host only; `out` holds world times `in`'s elements; `in` may be a view into `out`.
  void allgather(const Tensor& out, const Tensor& in, Duration timeout);
  // This host's segment ("/weft-..."; already unlinked), "" when this host has one rank.
  std::string segment_name() const;

 private:
  explicit IntraHost(shm::HostPlan plan, int world) : plan_(std::move(plan)), world_(world) {}
  // The live symmetric buffer that holds all of `t`, and where; null when none does.
  std::shared_ptr<shm::SymmetricBuffer> symmetric_of(const Tensor& t, size_t& offset);

  shm::HostPlan plan_;
  int world_;
  std::shared_ptr<gloo::Context> leaders_;  // leaders only, with several hosts
  uint32_t next_tag_ = 0;
  std::mutex symmetric_mu_;  // symmetric_: tensors looked up on the op's thread, freed anywhere
  std::vector<std::weak_ptr<shm::SymmetricBuffer>> symmetric_;
  uint64_t next_symmetric_id_ = 0;
};

}  // namespace weft::dist::detail
