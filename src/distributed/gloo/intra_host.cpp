#include "distributed/gloo/intra_host.h"

#include <gloo/rendezvous/context.h>

#include <algorithm>
#include <cstring>

#include "distributed/gloo/gloo_ops.h"
#include "distributed/shm/fold.h"

namespace weft::dist::detail {

std::shared_ptr<IntraHost> IntraHost::connect(const std::shared_ptr<Store>& store, int rank,
                                              int size, const shm::Settings& settings,
                                              std::shared_ptr<gloo::transport::Device> device,
                                              Duration timeout) {
  std::optional<shm::HostPlan> plan = shm::plan_hosts(*store, rank, size, settings);
  if (!plan) return nullptr;
  std::shared_ptr<IntraHost> ih(new IntraHost(std::move(*plan), size));
  const int hosts = static_cast<int>(ih->plan_.leaders.size());
  if (hosts > 1 && ih->plan_.leader()) {
    auto ctx = std::make_shared<gloo::rendezvous::Context>(ih->plan_.host_index, hosts);
    ctx->setTimeout(timeout);
    GlooStore leaders_store(std::make_shared<PrefixStore>("shm/leaders", store));
    ctx->connectFullMesh(leaders_store, device);
    ih->leaders_ = std::move(ctx);
  }
  return ih;
}

std::string IntraHost::segment_name() const { return plan_.shm ? plan_.shm->segment().name() : ""; }

void IntraHost::allreduce(const Tensor& t, ReduceOp op, Duration timeout, void* out) {
  const size_t n = static_cast<size_t>(t.numel());
  if (n == 0) return;
  const shm::Deadline dl = shm::Deadline::after(timeout);
  void* data = t.raw_data();
  // The result copied to `out` where it was reduced in place.
  auto copy_out = [&] {
    if (out) std::memcpy(out, data, n * itemsize(t.dtype()));
  };
  if (plan_.leaders.size() == 1) {  // one host: the segment is the whole group
    size_t offset = 0;
    if (auto buf = symmetric_of(t, offset)) {
      plan_.shm->allreduce_symmetric(*buf, offset, n, t.dtype(), op, dl, out);
      return;
    }
    plan_.shm->allreduce(data, n, t.dtype(), op, dl);
    copy_out();
    return;
  }
  // Several hosts: AVG sums everywhere and divides once, by the world size, on each leader.
  const ReduceOp partial = op == ReduceOp::AVG ? ReduceOp::SUM : op;
  if (plan_.shm) plan_.shm->allreduce(data, n, t.dtype(), partial, dl);
  if (leaders_) {
    const auto left = std::chrono::duration_cast<Duration>(dl.at - shm::Clock::now());
    gloo_allreduce(leaders_, t, partial, next_tag_++, std::max(left, Duration(1)));
    if (op == ReduceOp::AVG) shm::average(data, n, t.dtype(), world_);
  }
  if (plan_.shm) plan_.shm->broadcast(data, n, t.dtype(), dl);
  copy_out();
}

Tensor IntraHost::empty_symmetric(const Shape& shape, DType dtype, Duration timeout) {
  WEFT_CHECK_DIST(one_host(), "shm empty_symmetric: the group spans several hosts");
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * itemsize(dtype);
  auto buf = shm::SymmetricBuffer::make(*plan_.shm, next_symmetric_id_++,
                                        std::max<size_t>(bytes, 1), shm::Deadline::after(timeout));
  if (!buf) return Tensor();
  {
    std::lock_guard<std::mutex> lock(symmetric_mu_);
    std::erase_if(symmetric_, [](const auto& w) { return w.expired(); });
    symmetric_.push_back(buf);
  }
  // The segment is fresh, so zero-filled; the tensor keeps the mapping alive.
  return make_over(buf->mine(), shape, dtype, buf);
}

std::shared_ptr<shm::SymmetricBuffer> IntraHost::symmetric_of(const Tensor& t, size_t& offset) {
  if (!t.is_contiguous()) return nullptr;
  std::lock_guard<std::mutex> lock(symmetric_mu_);
  for (const auto& w : symmetric_)
    if (auto buf = w.lock(); buf && buf->holds(t.raw_data(), t.nbytes(), offset)) return buf;
  return nullptr;
}

void IntraHost::reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op, Duration timeout) {
  WEFT_CHECK_DIST(one_host(), "shm reduce_scatter: the group spans several hosts");
  if (out.numel() == 0) return;
  plan_.shm->reduce_scatter(in.raw_data(), out.raw_data(), static_cast<size_t>(out.numel()),
                            out.dtype(), op, shm::Deadline::after(timeout));
}

void IntraHost::broadcast(const Tensor& t, int root, Duration timeout) {
  WEFT_CHECK_DIST(one_host(), "shm broadcast: the group spans several hosts");
  if (t.numel() == 0) return;
  plan_.shm->broadcast(t.raw_data(), static_cast<size_t>(t.numel()), t.dtype(),
                       shm::Deadline::after(timeout), root);
}

void IntraHost::allgather(const Tensor& out, const Tensor& in, Duration timeout) {
  WEFT_CHECK_DIST(one_host(), "shm allgather: the group spans several hosts");
  if (in.numel() == 0) return;
  plan_.shm->allgather(in.raw_data(), out.raw_data(), static_cast<size_t>(in.numel()), in.dtype(),
                       shm::Deadline::after(timeout));
}

}  // namespace weft::dist::detail
