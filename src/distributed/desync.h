// Internal: a group's collective sequence numbers and the desync report made from them, as in
// Note [Collective sequence numbers] (docs/ARCHITECTURE.md). Guarantees: recording a collective
// costs a lock and a small copy, never store traffic; a timed-out collective throws a DistError
// naming the rank(s) that did not reach it, after one report per group that waits at most
// min(timeout, 10 s) for the other ranks' reports.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "distributed/op_record.h"
#include "weft/distributed/store.h"

namespace weft::dist::detail {

class CollectiveLog {
 public:
  static constexpr int64_t kRing = 64;

  // `store` is the group's own (prefixed) store; null where there is none (MPI): a timeout then
  // names the collective but cannot compare ranks.
  CollectiveLog(int group_id, int rank, int size, std::shared_ptr<Store> store, Duration timeout);

  // The sequence number the next collective gets (1 for the first). The group issues under its
  // own lock, so next() then record() hands out numbers in issue order.
  int64_t next() const { return entered_.load(std::memory_order_relaxed) + 1; }
  void record(int64_t seq, const OpRecord& op);  // collective #seq is being issued
  void unrecord(int64_t seq);   // ...was refused at the call (bad arguments): it never ran
  void completed(int64_t seq);  // ...has finished without error

  void set_timeout(Duration t) { timeout_ms_.store(t.count(), std::memory_order_relaxed); }
  Duration timeout() const { return Duration(timeout_ms_.load(std::memory_order_relaxed)); }
  int group_id() const { return group_id_; }

  // A timed-out wait or op (its error's text says "timed out"): throws the desync diagnosis,
  // making it on the first call (which waits for the other ranks' reports). Any other error is
  // rethrown as it is.
  [[noreturn]] void fail(const std::exception_ptr& error);

  // "allreduce(SUM, float32 (4,)), 16 B": collective #seq as this rank issued it; "" unless it
  // is among the last kRing issued.
  std::string op_text(int64_t seq) const;

 private:
  struct Report {
    int64_t entered = 0, completed = 0;
    std::string first_pending, last;  // describe() of #completed+1 and of #entered
  };
  Report own_report() const;
  std::string diagnose(const std::string& error);
  std::string analyse(const std::map<int, Report>& reports, const std::string& store_error,
                      Duration grace) const;

  const int group_id_, rank_, size_;
  const std::shared_ptr<Store> store_;
  std::atomic<int64_t> timeout_ms_;
  std::atomic<int64_t> entered_{0};
  std::atomic<int64_t> completed_{0};
  mutable std::mutex ring_mu_;
  std::array<OpRecord, kRing> ring_{};

  std::mutex diagnosis_mu_;  // held by the one rank-local report; later failures wait for it
  std::optional<std::string> diagnosis_;
};

// Whether the error is a timeout (a wait's or the backend's own): the one failure a desync report
// explains. A lost connection names its peer already, and fails at once.
bool is_timeout(const std::exception_ptr& error);

}  // namespace weft::dist::detail
