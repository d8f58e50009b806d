// ProcessGroupNCCL's communicator state and completion (nccl_impl.h): issuing NCCL calls on the
// non-blocking communicator and polling them to completion, aborting it once, the watchdog thread
// that completes Works (running their then() callbacks) and aborts the communicator when an op
// overruns the timeout, and the Works themselves.
#include <cuda_runtime.h>
#include <nccl.h>

#include "cuda/cuda_check.h"
#include "distributed/nccl/nccl_impl.h"

namespace weft::dist {

namespace detail {

std::string nccl_message(ncclResult_t r, ncclComm_t comm) {
  std::string msg = std::string(ncclGetErrorString(r));
  if (comm) {
    const char* last = ncclGetLastError(comm);
    if (last && *last) msg += std::string(" (") + last + ")";
  }
  return msg;
}

}  // namespace detail

using detail::nccl_message;
using detail::WorkNCCL;

void ProcessGroupNCCL::Impl::abort_locked(const std::string& why) {
  if (!broken.empty()) return;
  broken = why;
  ncclCommAbort(comm);
  comm = nullptr;
}

void ProcessGroupNCCL::Impl::abort(const std::string& why) {
  std::lock_guard<std::mutex> issue_lock(issue_mu);
  std::lock_guard<std::mutex> lock(mu);
  abort_locked(why);
}

void ProcessGroupNCCL::Impl::settle(ncclResult_t r, const std::string& what) {
  const auto deadline = Clock::now() + timeout;
  while (r == ncclInProgress) {
    if (Clock::now() > deadline) {
      std::lock_guard<std::mutex> lock(mu);
      abort_locked(what + " on " + where + ": NCCL did not finish enqueueing within " +
                   std::to_string(timeout.count()) + " ms");
      WEFT_DIST_ERROR("weft.dist: ", broken);
    }
    std::this_thread::yield();
    ncclCommGetAsyncError(comm, &r);
  }
  if (r != ncclSuccess) {
    const std::string msg =
        "weft.dist: nccl " + what + " on " + where + " failed: " + nccl_message(r, comm);
    std::lock_guard<std::mutex> lock(mu);
    abort_locked(msg);
    WEFT_DIST_ERROR(msg);
  }
}

void ProcessGroupNCCL::Impl::group(const std::string& what,
                                   const std::function<ncclResult_t()>& calls) {
  settle(ncclGroupStart(), what);
  const ncclResult_t queued = calls();
  const ncclResult_t ended = ncclGroupEnd();
  settle(queued != ncclSuccess && queued != ncclInProgress ? queued : ended, what);
}

void ProcessGroupNCCL::Impl::poll_async_error() {
  std::string why;
  {
    std::unique_lock<std::mutex> issue_lock(issue_mu, std::try_to_lock);
    if (!issue_lock.owns_lock() || !comm) return;
    ncclResult_t r = ncclSuccess;
    if (ncclCommGetAsyncError(comm, &r) != ncclSuccess || r == ncclSuccess || r == ncclInProgress)
      return;
    why = "the communicator on " + where + " reported an error: " + nccl_message(r, comm);
  }
  abort(why);
}

// Completes finished Works in order (their callbacks run here) and aborts the communicator when
// the oldest unfinished one is overdue; then every pending Work fails with that error.
void ProcessGroupNCCL::Impl::watch() {
  // On the group's GPU, so that the event queries below make no context on another one.
  if (cudaSetDevice(device) == cudaSuccess) cuda::detail::mark_entered(device);
  std::unique_lock<std::mutex> lock(mu);
  while (true) {
    cv.wait_for(lock,
                pending.empty() ? std::chrono::milliseconds(100) : std::chrono::milliseconds(1));
    if (stop && pending.empty()) return;
    while (!pending.empty()) {
      std::shared_ptr<WorkNCCL> w = pending.front();
      lock.unlock();
      bool done = true;
      try {
        done = w->is_completed();
      } catch (...) {  // a CUDA error from the event query: the op failed, the thread goes on
        w->fail(std::current_exception());
      }
      if (!done) poll_async_error();
      lock.lock();
      if (done) {
        pending.pop_front();
        continue;
      }
      if (broken.empty() && w->overdue(Clock::now())) {
        // mu is released while abort() takes issue_mu first (the lock order), so that an op
        // being issued finishes with the comm before it is freed.
        lock.unlock();
        abort("nccl " + w->what() + " on " + where + " timed out after " +
              std::to_string(timeout.count()) +
              " ms; the watchdog aborted the communicator (a peer rank may have died or "
              "stalled, or the ranks issued different collectives)");
        lock.lock();
      }
      if (!broken.empty()) {
        auto failed = std::move(pending);
        pending.clear();
        const auto err = WEFT_DIST_ERROR_PTR("weft.dist: ", broken);
        lock.unlock();
        for (auto& f : failed) f->fail(err);
        lock.lock();
      }
      break;
    }
  }
}

namespace detail {

void WorkNCCL::wait(std::optional<Duration> timeout) {
  if (!timeout && !host_blocking_) {
    rethrow_if_failed();
    // The caller's stream waits for the op on the device; the host goes on.
    end_.block(cuda::current_stream(pg_->device));
    return;
  }
  const Duration t = timeout.value_or(pg_->timeout);
  const auto deadline = Clock::now() + t;
  while (!is_completed()) {
    if (Clock::now() > deadline) {
      const std::string msg = "nccl " + what_ + " on " + pg_->where + " timed out after " +
                              std::to_string(t.count()) +
                              " ms; the communicator was aborted (a peer rank may have died or "
                              "stalled, or the ranks issued different collectives)";
      pg_->abort(msg);
      fail(WEFT_DIST_ERROR_PTR("weft.dist: ", msg));
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  rethrow_if_failed();
  end_.block(cuda::current_stream(pg_->device));
}

bool WorkNCCL::is_completed() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (done_) return true;
  }
  if (!end_.query()) return false;
  // ncclCommAbort makes a hung kernel exit, so the end event also completes after an abort:
  // that is a failure, not a result (abort_locked sets `broken` before it aborts).
  std::string broken;
  {
    std::lock_guard<std::mutex> lock(pg_->mu);
    broken = pg_->broken;
  }
  finish(broken.empty() ? nullptr : WEFT_DIST_ERROR_PTR("weft.dist: ", broken));
  return true;
}

void WorkNCCL::then(std::function<void(std::exception_ptr)> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!done_) {
      callbacks_.push_back(std::move(fn));
      return;
    }
  }
  fn(error_);
}

void WorkNCCL::finish(std::exception_ptr error) {
  std::vector<std::function<void(std::exception_ptr)>> cbs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (done_) return;
    done_ = true;
    error_ = error;
    cbs.swap(callbacks_);
  }
  for (auto& cb : cbs) {
    try {
      cb(error);
    } catch (...) {
      // Callbacks run on the watchdog thread: a failing one fails the Work (first error
      // wins, reported by wait()) instead of ending the process.
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
  }
  keep_.clear();
}

void WorkNCCL::rethrow_if_failed() {
  std::lock_guard<std::mutex> lock(mu_);
  if (done_ && error_) std::rethrow_exception(error_);
}

}  // namespace detail

}  // namespace weft::dist
