#include "distributed/desync.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <sstream>

#include "distributed/work.h"
#include "weft/distributed/error_file.h"

namespace weft::dist::detail {

namespace {

using Clock = std::chrono::steady_clock;

std::string key(int rank) { return "desync/" + std::to_string(rank); }

// "rank 1", "ranks 1, 3": weft-run reads the list back from "... did not reach collective #".
std::string rank_list(const std::vector<int>& ranks) {
  std::string s = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s;
}

std::string with_op(const std::string& what, const std::string& op) {
  return op.empty() ? what : what + " (" + op + ")";
}

}  // namespace

bool is_timeout(const std::exception_ptr& error) {
  std::string m = message_of(error);
  std::transform(m.begin(), m.end(), m.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return m.find("timed out") != std::string::npos;
}

CollectiveLog::CollectiveLog(int group_id, int rank, int size, std::shared_ptr<Store> store,
                             Duration timeout)
    : group_id_(group_id),
      rank_(rank),
      size_(size),
      store_(std::move(store)),
      timeout_ms_(timeout.count()) {}

void CollectiveLog::record(int64_t seq, const OpRecord& op) {
  std::lock_guard<std::mutex> lock(ring_mu_);
  ring_[static_cast<size_t>(seq % kRing)] = op;
  entered_.store(seq, std::memory_order_relaxed);
}

void CollectiveLog::unrecord(int64_t seq) {
  std::lock_guard<std::mutex> lock(ring_mu_);
  if (entered_.load(std::memory_order_relaxed) == seq) entered_.store(seq - 1);
}

void CollectiveLog::completed(int64_t seq) {
  // Ops complete in issue order on every backend; max() keeps a late callback from going back.
  int64_t cur = completed_.load(std::memory_order_relaxed);
  while (seq > cur && !completed_.compare_exchange_weak(cur, seq, std::memory_order_relaxed)) {
  }
}

std::string CollectiveLog::op_text(int64_t seq) const {
  std::lock_guard<std::mutex> lock(ring_mu_);
  const int64_t entered = entered_.load(std::memory_order_relaxed);
  if (seq < 1 || seq > entered || seq <= entered - kRing) return "";
  return ring_[static_cast<size_t>(seq % kRing)].describe_with_size();
}

CollectiveLog::Report CollectiveLog::own_report() const {
  Report r;
  r.completed = completed_.load(std::memory_order_relaxed);
  r.entered = std::max(entered_.load(std::memory_order_relaxed), r.completed);
  r.first_pending = op_text(r.completed + 1);
  r.last = op_text(r.entered);
  return r;
}

[[noreturn]] void CollectiveLog::fail(const std::exception_ptr& error) {
  if (!is_timeout(error)) std::rethrow_exception(error);
  std::string diagnosis;
  {
    std::lock_guard<std::mutex> lock(diagnosis_mu_);
    if (!diagnosis_) {
      diagnosis_ = diagnose(message_of(error));
      record_error(*diagnosis_);  // for weft-run, which names the stalled rank from it
    }
    diagnosis = *diagnosis_;
  }
  WEFT_DIST_ERROR(diagnosis);
}

// Note [Collective sequence numbers]: publish this rank's counts under desync/<rank> of the
// group's store, wait up to the grace for the other ranks' reports, and name who is behind.
std::string CollectiveLog::diagnose(const std::string& error) {
  const Report mine = own_report();
  const std::string stuck = "collective #" + std::to_string(mine.completed + 1);
  const std::string on = " of group " + std::to_string(group_id_) + " timed out on rank " +
                         std::to_string(rank_) + " of " + std::to_string(size_);
  if (!store_) {
    return "weft.dist: " + with_op(stuck, mine.first_pending) + on +
           " (this backend has no store through which to compare the ranks' progress): " + error;
  }
  std::ostringstream enc;
  enc << mine.entered << " " << mine.completed << "\n" << mine.first_pending << "\n" << mine.last;
  try {
    store_->set(key(rank_), enc.str());
  } catch (const std::exception& e) {
    return "weft.dist: " + with_op(stuck, mine.first_pending) + on +
           ", and the ranks could not compare their progress: the store is unreachable (its "
           "host, rank 0 of the job, may have died): " +
           e.what() + "; the timeout: " + error;
  }
  const Duration grace = std::min<Duration>(timeout(), std::chrono::seconds(10));
  const auto deadline = Clock::now() + grace;
  std::map<int, Report> reports{{rank_, mine}};
  std::string store_error;
  for (int r = 0; r < size_ && store_error.empty(); ++r) {
    if (r == rank_) continue;
    const auto left = std::chrono::duration_cast<Duration>(deadline - Clock::now());
    try {
      if (left.count() > 0) store_->wait({key(r)}, left);
    } catch (const DistError&) {  // no report within the grace
    }
    try {
      if (!store_->check({key(r)})) continue;
      std::istringstream in(store_->get_string(key(r)));
      Report rep;
      in >> rep.entered >> rep.completed;
      in.ignore(1);
      std::getline(in, rep.first_pending);
      std::getline(in, rep.last);
      reports[r] = rep;
    } catch (const std::exception& e) {
      store_error = e.what();  // its host went away meanwhile: judge by what came in
    }
  }
  return "weft.dist: " + analyse(reports, store_error, grace) + ". Rank " + std::to_string(rank_) +
         "'s error: " + error;
}

// Collective #K is the earliest one a reporting rank is stuck in (entered, not completed; a
// broadcast's root may complete without its receivers, so completion alone does not say that
// everyone got there). Ranks behind it either sent no report (stalled, or dead) or report fewer
// than K collectives entered.
std::string CollectiveLog::analyse(const std::map<int, Report>& reports,
                                   const std::string& store_error, Duration grace) const {
  int64_t k = INT64_MAX;
  for (const auto& [r, rep] : reports)
    if (rep.entered > rep.completed) k = std::min(k, rep.completed + 1);
  if (k == INT64_MAX)  // this rank's timed-out op is pending, so only as a safeguard
    for (const auto& [r, rep] : reports) k = std::min(k, rep.completed + 1);
  std::string op;
  for (const auto& [r, rep] : reports)
    if (op.empty() && rep.completed + 1 == k && rep.entered >= k) op = rep.first_pending;
  const std::string coll = "collective #" + std::to_string(k);
  const std::string group = " of group " + std::to_string(group_id_);
  std::vector<int> silent, reached;
  for (int r = 0; r < size_; ++r) {
    auto it = reports.find(r);
    if (it == reports.end())
      silent.push_back(r);
    else if (it->second.entered >= k)
      reached.push_back(r);
  }
  std::vector<std::string> clauses;
  if (!silent.empty()) {
    std::string why = "no desync report within " + std::to_string(grace.count()) + " ms";
    if (!store_error.empty()) why = "no desync report before the store went away (" + store_error;
    if (!store_error.empty()) why += ")";
    if (!reached.empty()) why += ", while " + rank_list(reached) + " reached it";
    clauses.push_back(rank_list(silent) + " did not reach " + with_op(coll, op) + group +
                      ": stalled or dead (" + why + ")");
  }
  for (const auto& [r, rep] : reports) {
    if (rep.entered >= k) continue;
    clauses.push_back(rank_list({r}) + " did not reach " +
                      (clauses.empty() ? with_op(coll, op) : coll) + group +
                      ": it is behind, at collective #" + std::to_string(rep.entered) +
                      (rep.last.empty() ? "" : " (" + rep.last + ")"));
  }
  if (clauses.empty()) {
    return "all " + std::to_string(size_) + " ranks reached " + with_op(coll, op) + group +
           ", and it timed out on rank " + std::to_string(rank_) +
           ": a hang inside it, or the ranks issued different collectives or shapes "
           "(WEFT_DISTRIBUTED_DEBUG=DETAIL checks that they agree)";
  }
  std::string out;
  for (const auto& c : clauses) out += (out.empty() ? "" : "; ") + c;
  return out;
}

}  // namespace weft::dist::detail
