// Internal: the asynchronous machinery shared by the CPU backends (Gloo, MPI). An OpQueue owns
// one communication thread that runs a group's collectives in issue order; each op returns a
// WorkImpl. Guarantees: Work::wait never blocks past its timeout (DistError naming the op), an
// op's exception reaches wait() and then() callbacks, and once one op fails the group is
// "broken": later ops fail fast with the first error instead of mismatching with the peers.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "weft/distributed/process_group.h"

namespace weft::dist::detail {

// The exception's what(), or "unknown exception" for one that is not a std::exception.
std::string message_of(const std::exception_ptr& e);

class WorkImpl : public Work {
 public:
  // `what` names the op for messages ("gloo allreduce(SUM, float32 [4]) on rank 1 of 2").
  WorkImpl(std::string what, Duration default_timeout)
      : what_(std::move(what)), default_timeout_(default_timeout) {}
  void wait(std::optional<Duration> timeout = std::nullopt) override;
  bool is_completed() override;
  // Before completion fn runs on the communication thread, and wait() returns only after it
  // has run; after completion it runs at once on the caller's thread.
  void then(std::function<void(std::exception_ptr)> fn) override;

  // Called once by the communication thread: runs the callbacks, then wakes the waiters.
  void finish(std::exception_ptr error);
  const std::string& what() const { return what_; }

 private:
  const std::string what_;
  const Duration default_timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::atomic<bool> done_flag_{false};  // done_, readable without the lock (wait's spin)
  std::exception_ptr error_;
  std::vector<std::function<void(std::exception_ptr)>> callbacks_;
};

class OpQueue {
 public:
  explicit OpQueue(std::string group_name);
  // Fails the ops that have not started, lets the running one finish (Gloo's ops are bounded
  // by their own timeout) for up to `shutdown_grace`, then detaches the thread if it is stuck
  // (an MPI call with a dead peer can block forever; exiting beats hanging).
  ~OpQueue();
  OpQueue(const OpQueue&) = delete;
  OpQueue& operator=(const OpQueue&) = delete;

  // Queues fn; any exception it throws becomes a DistError "<what> failed: <message>".
  std::shared_ptr<Work> enqueue(std::string what, Duration wait_timeout, std::function<void()> fn);
  void set_shutdown_grace(Duration d) { shutdown_grace_ = d; }

 private:
  struct Op {
    std::shared_ptr<WorkImpl> work;
    std::function<void()> fn;
  };
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Op> queue;
    bool stop = false;
    bool exited = false;
    std::string broken;  // first failure, if any
  };
  static void run(std::shared_ptr<State> state);

  std::string group_name_;
  std::shared_ptr<State> state_;  // shared with the thread so a detached thread stays valid
  std::thread thread_;
  Duration shutdown_grace_ = std::chrono::seconds(10);
};

}  // namespace weft::dist::detail
