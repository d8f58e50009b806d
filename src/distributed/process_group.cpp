// ProcessGroup's shared parts: ReduceOp's names, the refusal of an op a backend lacks, and
// monitored_barrier made of send/recv (so every backend with point-to-point ops has it).
#include "weft/distributed/process_group.h"

#include <algorithm>
#include <mutex>

#include "distributed/collectives.h"
#include "weft/autograd.h"
#include "weft/ops.h"

namespace weft::dist {

std::string to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::SUM:
      return "SUM";
    case ReduceOp::AVG:
      return "AVG";
    case ReduceOp::MAX:
      return "MAX";
    case ReduceOp::MIN:
      return "MIN";
    case ReduceOp::PRODUCT:
      return "PRODUCT";
    case ReduceOp::BAND:
      return "BAND";
    case ReduceOp::BOR:
      return "BOR";
    case ReduceOp::BXOR:
      return "BXOR";
  }
  return "?";
}

bool is_bitwise(ReduceOp op) {
  return op == ReduceOp::BAND || op == ReduceOp::BOR || op == ReduceOp::BXOR;
}

namespace {

[[noreturn]] void unsupported(const ProcessGroup& pg, const char* op) {
  WEFT_DIST_ERROR(op, " is not supported by the ", pg.backend_name(), " backend");
}

// A tag user code does not pick (it stays below MPI's smallest guaranteed MPI_TAG_UB, 32767).
constexpr int kMonitoredBarrierTag = 32766;

std::string rank_list(const std::vector<int>& ranks) {
  std::string s = ranks.size() > 1 ? "ranks " : "rank ";
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(ranks[i]);
  }
  return s;
}

}  // namespace

namespace {

// allreduce_into by default: the in-place all-reduce's Work, with the copy into the output done
// once, by whichever of wait(), is_completed() and then()'s callback first sees the op done.
class CopiedOutWork : public Work, public std::enable_shared_from_this<CopiedOutWork> {
 public:
  CopiedOutWork(std::shared_ptr<Work> inner, Tensor out, Tensor in)
      : inner_(std::move(inner)), out_(std::move(out)), in_(std::move(in)) {}
  void wait(std::optional<Duration> timeout) override {
    inner_->wait(timeout);
    copy();
  }
  bool is_completed() override {
    if (!inner_->is_completed()) return false;
    copy();  // completed means the output holds the result
    return true;
  }
  void then(std::function<void(std::exception_ptr)> fn) override {
    inner_->then([self = shared_from_this(), fn = std::move(fn)](std::exception_ptr e) {
      if (!e) self->copy();
      fn(e);
    });
  }

 private:
  void copy() {
    std::call_once(copied_, [this] {
      NoGradGuard ng;
      out_.copy_(in_);
    });
  }
  std::shared_ptr<Work> inner_;
  Tensor out_, in_;
  std::once_flag copied_;
};

}  // namespace

std::shared_ptr<Work> ProcessGroup::allreduce_into(Tensor output, Tensor input, ReduceOp op) {
  detail::check_allreduce_into("allreduce_into", output, input);
  return std::make_shared<CopiedOutWork>(allreduce({input}, op), output, input);
}

Tensor ProcessGroup::empty_symmetric(const Shape& shape, DType dtype) {
  return zeros(shape, {.dtype = dtype, .device = Device::CPU()});
}

std::shared_ptr<Work> ProcessGroup::reduce(std::vector<Tensor>, int, ReduceOp) {
  unsupported(*this, "reduce");
}
std::shared_ptr<Work> ProcessGroup::gather(std::vector<Tensor>, Tensor, int) {
  unsupported(*this, "gather");
}
std::shared_ptr<Work> ProcessGroup::scatter(Tensor, std::vector<Tensor>, int) {
  unsupported(*this, "scatter");
}
std::shared_ptr<Work> ProcessGroup::allgather_into_tensor(Tensor, Tensor) {
  unsupported(*this, "allgather_into_tensor");
}
std::shared_ptr<Work> ProcessGroup::reduce_scatter_tensor(Tensor, Tensor, ReduceOp) {
  unsupported(*this, "reduce_scatter_tensor");
}
std::shared_ptr<Work> ProcessGroup::alltoall_base(Tensor, Tensor, std::vector<int64_t>,
                                                  std::vector<int64_t>) {
  unsupported(*this, "alltoall_base");
}
std::shared_ptr<Work> ProcessGroup::alltoall(std::vector<Tensor>, std::vector<Tensor>) {
  unsupported(*this, "alltoall");
}
std::shared_ptr<Work> ProcessGroup::send(std::vector<Tensor>, int, int) {
  unsupported(*this, "send");
}
std::shared_ptr<Work> ProcessGroup::recv(std::vector<Tensor>, int, int) {
  unsupported(*this, "recv");
}

// As PyTorch's: every rank sends to rank 0, which waits for each within the timeout, then
// releases them. Rank 0 names the missing rank(s); the others fail waiting for the release.
void ProcessGroup::monitored_barrier(std::optional<Duration> timeout, bool wait_all_ranks) {
  const Duration t = timeout.value_or(timeout_);
  const auto deadline = std::chrono::steady_clock::now() + t;
  auto left = [&] {
    auto d = std::chrono::duration_cast<Duration>(deadline - std::chrono::steady_clock::now());
    return std::max(d, Duration(1));
  };
  const std::string where = " (rank " + std::to_string(rank_) + " of " + std::to_string(size_) +
                            ", " + backend_name() + ")";
  if (rank_ != 0) {
    Tensor token = make_empty({1}, kInt64);
    token.fill_(rank_);
    send({token}, 0, kMonitoredBarrierTag)->wait(t);
    Tensor ack = make_empty({1}, kInt64);
    try {
      recv({ack}, 0, kMonitoredBarrierTag)->wait(left());
    } catch (const std::exception& e) {
      WEFT_DIST_ERROR("monitored_barrier: rank 0 did not release rank ", rank_, " within ",
                      t.count(), " ms", where,
                      "; rank 0 names the ranks that did not arrive: ", e.what());
    }
    return;
  }
  std::vector<Tensor> tokens;
  std::vector<std::shared_ptr<Work>> works;
  for (int r = 1; r < size_; ++r) {
    tokens.push_back(make_empty({1}, kInt64));
    works.push_back(recv({tokens.back()}, r, kMonitoredBarrierTag));
  }
  std::vector<int> missing;
  for (int r = 1; r < size_; ++r) {
    try {
      works[r - 1]->wait(left());
    } catch (const std::exception&) {
      missing.push_back(r);
      if (!wait_all_ranks) break;
    }
  }
  if (!missing.empty()) {
    WEFT_DIST_ERROR("monitored_barrier: ", rank_list(missing), " failed to pass monitored_barrier",
                    " (did not arrive) within ", t.count(), " ms", where,
                    wait_all_ranks ? "" : "; the first rank missing (wait_all_ranks names all)");
  }
  std::vector<std::shared_ptr<Work>> acks;
  for (int r = 1; r < size_; ++r) {
    Tensor ack = make_empty({1}, kInt64);
    ack.fill_(0);
    acks.push_back(send({ack}, r, kMonitoredBarrierTag));
  }
  for (auto& w : acks) w->wait(left());
}

}  // namespace weft::dist
