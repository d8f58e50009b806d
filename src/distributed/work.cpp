#include "distributed/work.h"

#include <pthread.h>

namespace weft::dist::detail {

std::string message_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "unknown exception";
  }
}

constexpr std::chrono::microseconds kPollBeforeSleep{2000};

void WorkImpl::wait(std::optional<Duration> timeout) {
  const Duration t = timeout.value_or(default_timeout_);
  // Poll (yielding the core to the communication threads) for a short while before sleeping.
  // A thread that sleeps through a collective's few hundred microseconds is woken late on
  // virtual machines (an idle vCPU halts; waking it costs up to milliseconds): SyncBatchNorm's
  // two small collectives per step waited ~1-2 ms median that way, ~0.25 ms polling.
  const auto spin_until = std::chrono::steady_clock::now() + kPollBeforeSleep;
  while (!done_flag_.load(std::memory_order_acquire) &&
         std::chrono::steady_clock::now() < spin_until)
    std::this_thread::yield();
  std::unique_lock<std::mutex> lock(mu_);
  const bool done = cv_.wait_for(lock, t, [&] { return done_; });
  WEFT_CHECK_DIST(done, "weft.dist: timed out after ", t.count(), " ms waiting for ", what_,
                  "; a peer rank may have died or stalled, or the ranks issued different "
                  "collectives (the op itself may still be running)");
  if (error_) std::rethrow_exception(error_);
}

bool WorkImpl::is_completed() {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

void WorkImpl::then(std::function<void(std::exception_ptr)> fn) {
  std::exception_ptr err;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!done_) {
      callbacks_.push_back(std::move(fn));
      return;
    }
    err = error_;
  }
  fn(err);
}

void WorkImpl::finish(std::exception_ptr error) {
  std::unique_lock<std::mutex> lock(mu_);
  error_ = error;
  // Callbacks may register more callbacks; run until none is left, then complete, so that
  // wait() returning means every callback registered before completion has run.
  while (!callbacks_.empty()) {
    auto cbs = std::move(callbacks_);
    callbacks_.clear();
    lock.unlock();
    for (auto& cb : cbs) {
      try {
        cb(error);
      } catch (...) {
        // A failing callback fails the Work (first error wins): wait() reports it.
        lock.lock();
        if (!error_) error_ = std::current_exception();
        lock.unlock();
      }
    }
    lock.lock();
  }
  done_ = true;
  done_flag_.store(true, std::memory_order_release);
  lock.unlock();
  cv_.notify_all();
}

OpQueue::OpQueue(std::string group_name)
    : group_name_(std::move(group_name)), state_(std::make_shared<State>()) {
  thread_ = std::thread(&OpQueue::run, state_);
  // Shows up in gdb/top; Linux limits names to 15 characters.
  pthread_setname_np(thread_.native_handle(), group_name_.substr(0, 15).c_str());
}

OpQueue::~OpQueue() {
  std::deque<Op> pending;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop = true;
    pending.swap(state_->queue);
  }
  state_->cv.notify_all();
  for (auto& op : pending) {
    op.work->finish(WEFT_DIST_ERROR_PTR(op.work->what(),
                                        " did not run: its process group was destroyed first"));
  }
  std::unique_lock<std::mutex> lock(state_->mu);
  bool exited = state_->cv.wait_for(lock, shutdown_grace_, [&] { return state_->exited; });
  lock.unlock();
  if (exited) {
    thread_.join();
  } else {
    thread_.detach();  // stuck in a blocking library call; `state_` stays alive with it
  }
}

std::shared_ptr<Work> OpQueue::enqueue(std::string what, Duration wait_timeout,
                                       std::function<void()> fn) {
  auto work = std::make_shared<WorkImpl>(std::move(what), wait_timeout);
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    WEFT_CHECK_DIST(!state_->stop, work->what(), ": the process group is being destroyed");
    state_->queue.push_back(Op{work, std::move(fn)});
  }
  state_->cv.notify_all();
  return work;
}

void OpQueue::run(std::shared_ptr<State> state) {
  std::unique_lock<std::mutex> lock(state->mu);
  for (;;) {
    state->cv.wait(lock, [&] { return state->stop || !state->queue.empty(); });
    if (state->queue.empty()) break;  // stop requested and nothing left
    Op op = std::move(state->queue.front());
    state->queue.pop_front();
    std::string broken = state->broken;
    lock.unlock();

    std::exception_ptr error;
    if (!broken.empty()) {
      error = WEFT_DIST_ERROR_PTR(op.work->what(), " not run: the process group failed earlier (",
                                  broken, ")");
    } else {
      try {
        op.fn();
      } catch (...) {
        const std::string msg =
            op.work->what() + " failed: " + message_of(std::current_exception());
        error = WEFT_DIST_ERROR_PTR(msg);
        lock.lock();
        if (state->broken.empty()) state->broken = msg;
        lock.unlock();
      }
    }
    op.fn = nullptr;  // drop the op's buffers before completing it
    op.work->finish(error);
    lock.lock();
  }
  state->exited = true;
  lock.unlock();
  state->cv.notify_all();
}

}  // namespace weft::dist::detail
