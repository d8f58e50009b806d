// ProcessGroupGloo's send/recv: posted at once on the caller's thread through Gloo's unbound
// buffers (as PyTorch's Gloo backend does), outside the group's queue, so that any order of
// isend/irecv between two ranks makes progress. The Work waits on the buffer.
#include <gloo/common/error.h>
#include <gloo/types.h>

#include <mutex>

#include "distributed/gloo/gloo_ops.h"

namespace weft::dist::detail {

namespace {

// Above Gloo's own slot prefixes (its collectives use small ones), so tags never collide.
constexpr uint8_t kP2PSlotPrefix = 0x7f;

class GlooP2PWork : public Work {
 public:
  GlooP2PWork(std::unique_ptr<gloo::transport::UnboundBuffer> buf, Tensor t, bool is_send,
              std::string what, Duration timeout)
      : buf_(std::move(buf)),
        t_(std::move(t)),
        is_send_(is_send),
        what_(std::move(what)),
        timeout_(timeout) {}

  // Done: rethrows the op's error. Else waits up to `timeout`. Running out of time fails the op
  // for good: Gloo closes the connection to the peer when a wait on it times out.
  void wait(std::optional<Duration> timeout) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!done_) {
      const Duration t = timeout.value_or(timeout_);
      try {
        if (buf_) is_send_ ? buf_->waitSend(t) : buf_->waitRecv(t);
        complete(lock, nullptr);
      } catch (const std::exception& e) {
        const std::string msg = e.what();
        const bool timed_out = msg.find("Timed out") != std::string::npos ||
                               msg.find("timed out") != std::string::npos;
        std::string why = what_;
        why.append(timed_out ? " timed out after " + std::to_string(t.count()) + " ms: "
                             : " failed: ");
        complete(lock, std::make_exception_ptr(DistError(why + msg)));
      }
    }
    if (error_) std::rethrow_exception(error_);
  }

  // Gloo cannot poll a transfer without a timeout that would close the connection, so this
  // says whether a wait() has seen it finish (as PyTorch's Gloo send/recv Works).
  bool is_completed() override {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }

  void then(std::function<void(std::exception_ptr)> fn) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!done_) {
      callbacks_.push_back(std::move(fn));
      return;
    }
    auto e = error_;
    lock.unlock();
    fn(e);
  }

 private:
  // Marks the op done and runs the callbacks (on the thread that saw it finish).
  void complete(std::unique_lock<std::mutex>& lock, std::exception_ptr e) {
    done_ = true;
    error_ = e;
    auto cbs = std::move(callbacks_);
    lock.unlock();
    for (auto& fn : cbs) fn(e);
    lock.lock();
  }

  std::unique_ptr<gloo::transport::UnboundBuffer> buf_;  // null: nothing to move (0 bytes)
  Tensor t_;                                             // keeps the memory alive
  const bool is_send_;
  const std::string what_;
  const Duration timeout_;
  std::mutex mu_;
  bool done_ = false;
  std::exception_ptr error_;
  std::vector<std::function<void(std::exception_ptr)>> callbacks_;
};

}  // namespace

std::shared_ptr<Work> gloo_p2p(const Ctx& ctx, bool is_send, const Tensor& t, int peer, int tag,
                               Duration timeout, std::string what) {
  std::unique_ptr<gloo::transport::UnboundBuffer> buf;
  if (t.nbytes() > 0) {
    buf = ctx->createUnboundBuffer(t.raw_data(), t.nbytes());
    const uint64_t slot = gloo::Slot::build(kP2PSlotPrefix, static_cast<uint32_t>(tag));
    try {
      is_send ? buf->send(peer, slot) : buf->recv(peer, slot);
    } catch (const std::exception& e) {
      WEFT_DIST_ERROR(what, " failed: ", e.what());
    }
  }
  return std::make_shared<GlooP2PWork>(std::move(buf), t, is_send, std::move(what), timeout);
}

}  // namespace weft::dist::detail
