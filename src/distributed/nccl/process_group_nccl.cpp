// ProcessGroupNCCL (see the header): communicator setup through the store with a non-blocking
// NCCL config (so that setup has a timeout), collectives on a dedicated stream ordered against
// the caller's stream with events, and a watchdog thread that completes Works (running their
// then() callbacks) and aborts the communicator when an op overruns the timeout.
#include "weft/distributed/nccl/process_group_nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "cuda/cuda_check.h"
#include "distributed/collectives.h"
#include "weft/autograd.h"
#include "weft/cuda.h"
#include "weft/ops.h"

namespace weft::dist {

namespace {

using Clock = std::chrono::steady_clock;

std::string nccl_message(ncclResult_t r, ncclComm_t comm) {
  std::string msg = std::string(ncclGetErrorString(r));
  if (comm) {
    const char* last = ncclGetLastError(comm);
    if (last && *last) msg += std::string(" (") + last + ")";
  }
  return msg;
}

ncclDataType_t nccl_dtype(DType t) {
  switch (t) {
    case DType::Float32:
      return ncclFloat32;
    case DType::Int64:
      return ncclInt64;
    case DType::Float16:
      return ncclHalf;
    case DType::BFloat16:
      return ncclBfloat16;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::SUM:
      return ncclSum;
    case ReduceOp::AVG:
      return ncclAvg;
    case ReduceOp::MAX:
      return ncclMax;
    case ReduceOp::MIN:
      return ncclMin;
    case ReduceOp::PRODUCT:
      return ncclProd;
  }
  return ncclSum;
}

class WorkNCCL;

}  // namespace

struct ProcessGroupNCCL::Impl {
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
  std::deque<std::shared_ptr<WorkNCCL>> pending;
  std::string broken;  // set once the communicator was aborted
  bool stop = false;
  std::thread watchdog;

  // Aborts the communicator once; later ops fail with `why`. Caller holds issue_mu and mu.
  void abort_locked(const std::string& why) {
    if (!broken.empty()) return;
    broken = why;
    ncclCommAbort(comm);
    comm = nullptr;
  }
  // The same from a thread that holds neither lock.
  void abort(const std::string& why) {
    std::lock_guard<std::mutex> issue_lock(issue_mu);
    std::lock_guard<std::mutex> lock(mu);
    abort_locked(why);
  }

  // Polls a non-blocking communicator until the last call has left ncclInProgress. Caller holds
  // issue_mu.
  void settle(ncclResult_t r, const std::string& what) {
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

  // Issues `calls` (NCCL calls on comm; they return the first failure) as one NCCL group. Inside
  // a group NCCL only records the calls; on a non-blocking communicator the work (and
  // ncclInProgress) comes at ncclGroupEnd, and the state is polled only after it (NCCL's
  // "Nonblocking Group Operation"). ncclGroupEnd is called even when a call failed, so that the
  // thread is not left inside an open group. Caller holds issue_mu.
  void group(const std::string& what, const std::function<ncclResult_t()>& calls) {
    settle(ncclGroupStart(), what);
    const ncclResult_t queued = calls();
    const ncclResult_t ended = ncclGroupEnd();
    settle(queued != ncclSuccess && queued != ncclInProgress ? queued : ended, what);
  }

  // A peer that dies mid-collective shows as an asynchronous error on the communicator long
  // before the timeout; abort on it then. Skipped while an op is being issued (that thread
  // polls the same state). Caller holds neither lock.
  void poll_async_error() {
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

  void watch();
};

namespace {

class WorkNCCL : public Work {
 public:
  WorkNCCL(std::shared_ptr<ProcessGroupNCCL::Impl> pg, std::string what, bool host_blocking,
           std::vector<Tensor> keep)
      : pg_(std::move(pg)),
        what_(std::move(what)),
        host_blocking_(host_blocking),
        keep_(std::move(keep)),
        start_(Clock::now()) {}

  void record_end() { end_.record(cuda::Stream(pg_->device, pg_->stream)); }

  void wait(std::optional<Duration> timeout) override {
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

  bool is_completed() override {
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

  void then(std::function<void(std::exception_ptr)> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!done_) {
        callbacks_.push_back(std::move(fn));
        return;
      }
    }
    fn(error_);
  }

  // Marks the op done (error or not) once, runs the callbacks, releases the tensors.
  void finish(std::exception_ptr error) {
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
  void fail(std::exception_ptr error) { finish(error); }

  bool overdue(Clock::time_point now) const { return now - start_ > pg_->timeout; }
  const std::string& what() const { return what_; }

 private:
  void rethrow_if_failed() {
    std::lock_guard<std::mutex> lock(mu_);
    if (done_ && error_) std::rethrow_exception(error_);
  }

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

}  // namespace

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

ProcessGroupNCCL::ProcessGroupNCCL(std::shared_ptr<Store> store, int rank, int size,
                                   NCCLOptions options)
    : ProcessGroup(rank, size), impl_(std::make_shared<Impl>()) {
  timeout_ = options.timeout;
  Impl& m = *impl_;
  m.rank = rank;
  m.size = size;
  m.timeout = options.timeout;
  const std::string who = "rank " + std::to_string(rank) + " of " + std::to_string(size);
  WEFT_CHECK_DIST(size >= 1 && rank >= 0 && rank < size, "ProcessGroupNCCL: rank ", rank,
                  " is outside a group of size ", size);
  WEFT_CHECK(store, "ProcessGroupNCCL: null store");
  const int ndev = cuda::device_count();
  WEFT_CHECK_DIST(ndev != 0, "ProcessGroupNCCL: ", who, ": no CUDA device is available");
  int dev = options.device;
  if (dev < 0) {
    const Device cur = current_device();
    if (cur.is_cuda()) {
      dev = cur.index;
    } else {
      const char* lr = std::getenv("LOCAL_RANK");
      dev = (lr ? std::atoi(lr) : 0) % ndev;
    }
  }
  WEFT_CHECK_DIST(dev < ndev, "ProcessGroupNCCL: ", who, " asks for cuda:", dev, " but only ", ndev,
                  " devices exist");
  m.device = dev;
  m.where = who + " (cuda:" + std::to_string(dev) + ")";

  // The unique id travels through the store: rank 0 creates it, the others wait for it.
  ncclUniqueId id;
  if (rank == 0) {
    const ncclResult_t r = ncclGetUniqueId(&id);
    WEFT_CHECK_DIST(r == ncclSuccess, "ProcessGroupNCCL: ", m.where,
                    ": ncclGetUniqueId failed: ", nccl_message(r, nullptr));
    store->set("nccl/unique_id", std::vector<uint8_t>(reinterpret_cast<uint8_t*>(&id),
                                                      reinterpret_cast<uint8_t*>(&id) + sizeof id));
  } else {
    const std::vector<uint8_t> v = store->get("nccl/unique_id");
    WEFT_CHECK_DIST(v.size() == sizeof id, "ProcessGroupNCCL: ", m.where,
                    ": the store's NCCL id has ", v.size(), " bytes, expected ", sizeof id);
    std::memcpy(&id, v.data(), sizeof id);
  }

  cuda::detail::DeviceScope scope(dev);
  WEFT_CUDA_CHECK(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
  // Non-blocking communicator: setup (which waits for every rank) can be given up on.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = ncclCommInitRankConfig(&m.comm, size, id, rank, &config);
  const auto deadline = Clock::now() + options.timeout;
  while (r == ncclInProgress && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ncclCommGetAsyncError(m.comm, &r);
  }
  if (r != ncclSuccess) {
    const std::string why =
        r == ncclInProgress
            ? "not every rank joined within " + std::to_string(options.timeout.count()) + " ms"
            : nccl_message(r, m.comm);
    if (m.comm) ncclCommAbort(m.comm);
    cudaStreamDestroy(m.stream);
    WEFT_DIST_ERROR("ProcessGroupNCCL: ", m.where, " could not set up its communicator: ", why);
  }
  impl_->watchdog = std::thread([impl = impl_.get()] { impl->watch(); });
}

ProcessGroupNCCL::~ProcessGroupNCCL() {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    m.stop = true;
  }
  m.cv.notify_all();
  if (m.watchdog.joinable()) m.watchdog.join();  // returns once no op is pending (or all failed)
  // Not a DeviceScope, which throws: a destructor may run after CUDA's own teardown at exit
  // (a default group never destroyed), where every call fails; errors are ignored then.
  int prev = -1;
  const bool switched = cudaGetDevice(&prev) == cudaSuccess && prev != m.device &&
                        cudaSetDevice(m.device) == cudaSuccess;
  // A Work still held elsewhere may call wait(timeout) and abort: the comm goes under the locks.
  std::lock_guard<std::mutex> issue_lock(m.issue_mu);
  std::lock_guard<std::mutex> lock(m.mu);
  if (m.comm) {
    // A non-blocking communicator is finalized (flushing its ops) before it is destroyed.
    ncclResult_t r = ncclCommFinalize(m.comm);
    const auto deadline = Clock::now() + m.timeout;
    while (r == ncclInProgress && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      ncclCommGetAsyncError(m.comm, &r);
    }
    if (r == ncclSuccess)
      ncclCommDestroy(m.comm);
    else
      ncclCommAbort(m.comm);
    m.comm = nullptr;
    m.broken = "the process group was destroyed";
  }
  // m.stream is kept, not destroyed: tensors the collectives used may outlive the group, and
  // when freed the caching allocator records an event on every stream that used them.
  if (switched && cuda::detail::entered(prev)) cudaSetDevice(prev);
}

int ProcessGroupNCCL::device() const { return impl_->device; }

namespace {

// Checks an argument tensor: defined, on the group's device, contiguous, a dtype NCCL reduces.
void check_tensor(const ProcessGroupNCCL::Impl& m, const std::string& op, const Tensor& t,
                  const std::string& which) {
  const std::string pre = "nccl " + op + " on " + m.where + ": " + which;
  WEFT_CHECK_DIST(t.defined(), pre, " is an undefined tensor");
  WEFT_CHECK_DIST(t.device() == Device::CUDA(m.device), pre, " (", t.str(), ") is on ",
                  t.device().str(), "; this group's tensors live on cuda:", m.device);
  WEFT_CHECK_DIST(t.is_contiguous(), pre, " (", detail::shape_dtype_str(t), ", strides ",
                  shape_str(t.strides()), ") is not contiguous; call .contiguous() first");
}

void check_like(const ProcessGroupNCCL::Impl& m, const std::string& op, const Tensor& ref,
                const Tensor& t, const std::string& which) {
  WEFT_CHECK_DIST(t.dtype() == ref.dtype() && t.numel() == ref.numel(), "nccl ", op, " on ",
                  m.where, ": ", which, " (", detail::shape_dtype_str(t), ") does not match (",
                  detail::shape_dtype_str(ref), "): dtype and size must agree");
}

}  // namespace

// Runs `issue` (the NCCL calls, on m.stream) after the caller's queued work, records the end
// event and hands the Work to the watchdog.
static std::shared_ptr<Work> run_op(const std::shared_ptr<ProcessGroupNCCL::Impl>& impl,
                                    const std::string& what, bool host_blocking,
                                    std::vector<Tensor> keep,
                                    const std::function<void(ncclComm_t, cudaStream_t)>& issue) {
  ProcessGroupNCCL::Impl& m = *impl;
  std::lock_guard<std::mutex> issue_lock(m.issue_mu);
  {
    std::lock_guard<std::mutex> lock(m.mu);
    WEFT_CHECK_DIST(m.broken.empty(), "weft.dist: nccl ", what, " on ", m.where,
                    " refused: the communicator was aborted earlier: ", m.broken);
  }
  cuda::detail::DeviceScope scope(m.device);
  const cuda::Stream nccl(m.device, m.stream);
  cuda::Event ready;
  ready.record(cuda::current_stream(m.device));
  ready.block(nccl);
  // The caching allocator must not hand these blocks out again before the NCCL stream is done.
  for (const Tensor& t : keep)
    if (t.defined() && t.numel() > 0) cuda::record_stream(t, nccl);
  auto work = std::make_shared<WorkNCCL>(impl, what, host_blocking, std::move(keep));
  issue(m.comm, m.stream);
  work->record_end();
  {
    std::lock_guard<std::mutex> lock(m.mu);
    m.pending.push_back(work);
  }
  m.cv.notify_all();
  return work;
}

std::shared_ptr<Work> ProcessGroupNCCL::allreduce(std::vector<Tensor> tensors, ReduceOp op) {
  const std::string name = detail::allreduce_name(op);
  WEFT_CHECK_DIST(!tensors.empty(), "weft.dist: ", name, " on ", impl_->where, ": no tensors");
  for (size_t i = 0; i < tensors.size(); ++i)
    check_tensor(*impl_, name, tensors[i], "tensor " + std::to_string(i));
  const std::string what = detail::allreduce_name(op, tensors);
  auto impl = impl_;
  return run_op(impl_, what, false, tensors, [&](ncclComm_t comm, cudaStream_t s) {
    impl->group(what, [&] {
      for (const Tensor& t : tensors) {
        const ncclResult_t r = ncclAllReduce(t.device_ptr(), t.device_ptr(), (size_t)t.numel(),
                                             nccl_dtype(t.dtype()), nccl_op(op), comm, s);
        if (r != ncclSuccess && r != ncclInProgress) return r;
      }
      return ncclSuccess;
    });
  });
}

std::shared_ptr<Work> ProcessGroupNCCL::broadcast(std::vector<Tensor> tensors, int root) {
  const std::string name = detail::broadcast_name(root);
  WEFT_CHECK_DIST(!tensors.empty(), "weft.dist: ", name, " on ", impl_->where, ": no tensors");
  WEFT_CHECK_DIST(root >= 0 && root < size_, "weft.dist: ", name, " on ", impl_->where,
                  ": root is not a rank of the group");
  for (size_t i = 0; i < tensors.size(); ++i)
    check_tensor(*impl_, name, tensors[i], "tensor " + std::to_string(i));
  auto impl = impl_;
  return run_op(impl_, name, false, tensors, [&](ncclComm_t comm, cudaStream_t s) {
    impl->group(name, [&] {
      for (const Tensor& t : tensors) {
        const ncclResult_t r = ncclBroadcast(t.device_ptr(), t.device_ptr(), (size_t)t.numel(),
                                             nccl_dtype(t.dtype()), root, comm, s);
        if (r != ncclSuccess && r != ncclInProgress) return r;
      }
      return ncclSuccess;
    });
  });
}

std::shared_ptr<Work> ProcessGroupNCCL::allgather(std::vector<Tensor> outputs, Tensor input) {
  const std::string name = "allgather";
  check_tensor(*impl_, name, input, "input");
  WEFT_CHECK_DIST((int)outputs.size() == size_, "weft.dist: ", name, " on ", impl_->where, ": ",
                  outputs.size(), " output tensors for a group of size ", size_);
  for (size_t i = 0; i < outputs.size(); ++i) {
    check_tensor(*impl_, name, outputs[i], "output " + std::to_string(i));
    check_like(*impl_, name, input, outputs[i], "output " + std::to_string(i));
  }
  const std::string what = detail::allgather_name(input);
  const int64_t n = input.numel();
  // NCCL gathers into one buffer; the slices are then copied out on the NCCL stream.
  Tensor flat;
  {
    cuda::StreamGuard g(cuda::Stream(impl_->device, impl_->stream));
    flat = make_empty({(int64_t)outputs.size() * n}, input.dtype(), input.device());
  }
  std::vector<Tensor> keep = outputs;
  keep.push_back(input);
  keep.push_back(flat);
  auto impl = impl_;
  return run_op(impl_, what, false, keep, [&](ncclComm_t comm, cudaStream_t s) {
    impl->settle(ncclAllGather(input.device_ptr(), flat.device_ptr(), (size_t)n,
                               nccl_dtype(input.dtype()), comm, s),
                 what);
    cuda::StreamGuard g(cuda::Stream(impl->device, s));
    NoGradGuard ng;
    for (size_t i = 0; i < outputs.size(); ++i)
      outputs[i].copy_(flat.narrow(0, (int64_t)i * n, n).view(outputs[i].sizes()));
  });
}

std::shared_ptr<Work> ProcessGroupNCCL::reduce_scatter(Tensor output, std::vector<Tensor> inputs,
                                                       ReduceOp op) {
  const std::string name = detail::reduce_scatter_name(op);
  check_tensor(*impl_, name, output, "output");
  WEFT_CHECK_DIST((int)inputs.size() == size_, "weft.dist: ", name, " on ", impl_->where, ": ",
                  inputs.size(), " input tensors for a group of size ", size_);
  for (size_t i = 0; i < inputs.size(); ++i) {
    check_tensor(*impl_, name, inputs[i], "input " + std::to_string(i));
    check_like(*impl_, name, output, inputs[i], "input " + std::to_string(i));
  }
  const std::string what = detail::reduce_scatter_name(op, output);
  const int64_t n = output.numel();
  Tensor flat;
  {
    cuda::StreamGuard g(cuda::Stream(impl_->device, impl_->stream));
    flat = make_empty({(int64_t)inputs.size() * n}, output.dtype(), output.device());
  }
  std::vector<Tensor> keep = inputs;
  keep.push_back(output);
  keep.push_back(flat);
  auto impl = impl_;
  return run_op(impl_, what, false, keep, [&](ncclComm_t comm, cudaStream_t s) {
    {
      // The inputs side by side, on the NCCL stream (after the caller's work, see run_op).
      cuda::StreamGuard g(cuda::Stream(impl->device, s));
      NoGradGuard ng;
      for (size_t i = 0; i < inputs.size(); ++i)
        flat.narrow(0, (int64_t)i * n, n).copy_(inputs[i].reshape({n}));
    }
    impl->settle(ncclReduceScatter(flat.device_ptr(), output.device_ptr(), (size_t)n,
                                   nccl_dtype(output.dtype()), nccl_op(op), comm, s),
                 what);
  });
}

std::shared_ptr<Work> ProcessGroupNCCL::barrier() {
  Tensor one;
  {
    cuda::StreamGuard g(cuda::Stream(impl_->device, impl_->stream));
    one = zeros({1}, {.device = Device::CUDA(impl_->device)});
  }
  auto impl = impl_;
  return run_op(impl_, "barrier", true, {one}, [&](ncclComm_t comm, cudaStream_t s) {
    impl->settle(
        ncclAllReduce(one.device_ptr(), one.device_ptr(), 1, ncclFloat32, ncclSum, comm, s),
        "barrier");
  });
}

}  // namespace weft::dist
