// Internal to ProcessGroupNCCL: the state its collectives, its watchdog thread and its Works
// share. Impl owns the communicator and the NCCL stream; every use of the communicator holds
// issue_mu, so an abort (by the watchdog or a timed-out wait) never frees it under an op being
// issued. A WorkNCCL is one op: done when its end event is, failed once the communicator has been
// aborted. Their code is in nccl_watchdog.cpp; the collectives in process_group_nccl.cpp and
// nccl_collectives.cpp.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "weft/cuda.h"
#include "weft/distributed/nccl/process_group_nccl.h"

namespace weft::dist {

namespace detail {
// NCCL's text for r, with the communicator's last error when there is one.
std::string nccl_message(ncclResult_t r, ncclComm_t comm);
class WorkNCCL;
}  // namespace detail

struct ProcessGroupNCCL::Impl {
  using Clock = std::chrono::steady_clock;

  int rank = 0, size = 0, device = 0;
  std::string where;  // "rank 1 of 4 (cuda:1)"
  Duration timeout{};
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;  // the NCCL stream
  // Held by every use of `comm`: issuing a collective (one at a time: NCCL needs a common order),
  // polling its state, aborting and destroying it. ncclCommAbort frees the communicator, so an
  // abort from the watchdog or from wait(timeout) waits for an op being issued, then later ops
  // see `broken` and refuse instead of touching the freed comm. The wait is bounded: on a
  // non-blocking communicator no call blocks, and settle() gives up after the timeout.
  // Lock order: issue_mu before mu.
  std::mutex issue_mu;

  // Watchdog state.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<detail::WorkNCCL>> pending;
  std::string broken;  // set once the communicator was aborted
  bool stop = false;
  std::thread watchdog;

  // Aborts the communicator once; later ops fail with `why`. Caller holds issue_mu and mu.
  void abort_locked(const std::string& why);
  // The same from a thread that holds neither lock.
  void abort(const std::string& why);

  // Polls a non-blocking communicator until the last call has left ncclInProgress. Caller holds
  // issue_mu.
  void settle(ncclResult_t r, const std::string& what);

  // Issues `calls` (NCCL calls on comm; they return the first failure) as one NCCL group. Inside
  // a group NCCL only records the calls; on a non-blocking communicator the work (and
  // ncclInProgress) comes at ncclGroupEnd, and the state is polled only after it (NCCL's
  // "Nonblocking Group Operation"). ncclGroupEnd is called even when a call failed, so that the
  // thread is not left inside an open group. Caller holds issue_mu.
  void group(const std::string& what, const std::function<ncclResult_t()>& calls);

  // A peer that dies mid-collective shows as an asynchronous error on the communicator long
  // before the timeout; abort on it then. Skipped while an op is being issued (that thread
  // polls the same state). Caller holds neither lock.
  void poll_async_error();

  // The watchdog thread's loop (see nccl_watchdog.cpp).
  void watch();
};

namespace detail {

ncclDataType_t nccl_dtype(DType t);
ncclRedOp_t nccl_op(ReduceOp op);  // callers refuse BAND/BOR/BXOR first (nccl_check_op)
// Throws DistError unless t is defined, on the group's device and contiguous.
void nccl_check_tensor(const ProcessGroupNCCL::Impl& m, const std::string& op, const Tensor& t,
                       const std::string& which);
// Runs `issue` (the NCCL calls, on the group's stream) after the caller's queued work, records
// the end event and hands the Work to the watchdog; `keep` stays alive until the op is done.
std::shared_ptr<Work> nccl_run_op(const std::shared_ptr<ProcessGroupNCCL::Impl>& impl,
                                  const std::string& what, bool host_blocking,
                                  std::vector<Tensor> keep,
                                  const std::function<void(ncclComm_t, cudaStream_t)>& issue);

class WorkNCCL : public Work {
 public:
  using Clock = std::chrono::steady_clock;

  WorkNCCL(std::shared_ptr<ProcessGroupNCCL::Impl> pg, std::string what, bool host_blocking,
           std::vector<Tensor> keep)
      : pg_(std::move(pg)),
        what_(std::move(what)),
        host_blocking_(host_blocking),
        keep_(std::move(keep)),
        start_(Clock::now()) {}

  void record_end() { end_.record(cuda::Stream(pg_->device, pg_->stream)); }
  // Without a timeout (and not a barrier) only the caller's stream waits for the op; with one
  // the host polls, and aborts the communicator when the op overruns it.
  void wait(std::optional<Duration> timeout) override;
  bool is_completed() override;
  void then(std::function<void(std::exception_ptr)> fn) override;

  // Marks the op done (error or not) once, runs the callbacks, releases the tensors.
  void finish(std::exception_ptr error);
  void fail(std::exception_ptr error) { finish(error); }

  bool overdue(Clock::time_point now) const { return now - start_ > pg_->timeout; }
  const std::string& what() const { return what_; }

 private:
  void rethrow_if_failed();

  std::shared_ptr<ProcessGroupNCCL::Impl> pg_;
  const std::string what_;
  const bool host_blocking_;
  std::vector<Tensor> keep_;  // inputs/outputs/temporaries, alive until the op is done
  const Clock::time_point start_;
  cuda::Event end_;
  std::mutex mu_;
  bool done_ = false;
  std::exception_ptr error_;
  std::vector<std::function<void(std::exception_ptr)>> callbacks_;
};

}  // namespace detail

}  // namespace weft::dist
