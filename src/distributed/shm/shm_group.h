// Internal: the ranks of one host all-reducing and broadcasting through one shared segment in
// pipelined chunks (Note [Shared-memory all-reduce] in docs/ARCHITECTURE.md). Every rank ends with
// the same bits, folded in rank order (at two ranks exactly Gloo's); memory stays bounded whatever
// the size; every wait ends by the op's deadline, and a peer that is gone (even by SIGKILL) or late
// fails the op with a DistError naming its group rank.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "distributed/shm/segment.h"
#include "weft/distributed/process_group.h"

namespace weft::dist::shm {

class SymmetricBuffer;
using Clock = std::chrono::steady_clock;

// When an op must end, and the timeout it came from (for messages).
struct Deadline {
  Clock::time_point at;
  Duration timeout;
  static Deadline after(Duration t) {
    // A timeout of "forever" (years) must not overflow the clock.
    return {Clock::now() + std::min<Duration>(t, std::chrono::hours(24 * 365 * 100)), t};
  }
};

class ShmGroup {
 public:
  // The segment for n ranks staging `chunk` bytes each per step; its creator writes the header.
  static size_t segment_bytes(int n, size_t chunk);
  static Segment create_segment(int n, size_t chunk);
  // Takes a mapped segment (its header must say n ranks and `chunk`) and locks this rank's
  // liveness byte. `ranks` are the group ranks of local ranks 0..n-1, for messages.
  ShmGroup(Segment segment, int local_rank, std::vector<int> ranks, size_t chunk);

  int size() const { return static_cast<int>(ranks_.size()); }
  int local_rank() const { return me_; }
  Segment& segment() { return segment_; }

  // In place over `count` elements of `dtype` on every local rank; AVG divides by size().
  void allreduce(void* data, size_t count, DType dtype, ReduceOp op, const Deadline& dl);
  // In place over `count` elements at byte `offset` of every local rank's buffer of `buf`
  // (Note [Symmetric buffers]): every rank passes the same buffer and offset. The same bits as
  // allreduce of the same elements. With `out` (count elements, this process's own memory) the
  // result goes there instead and this rank's buffer is left holding part of it only: each rank
  // folds its part into its out and the other ranks' buffers, then copies the other parts out of
  // its own buffer (Note [All-reduce into a separate output]).
  void allreduce_symmetric(const SymmetricBuffer& buf, size_t offset, size_t count, DType dtype,
                           ReduceOp op, const Deadline& dl, void* out = nullptr);
  // A new segment of `bytes` that every local rank maps, its name already removed; empty on
  // every local rank alike when some rank could not map it (that rank says why on stderr).
  // Collective, in the group's op order (Note [Symmetric buffers]).
  std::optional<Segment> share_segment(size_t bytes, const Deadline& dl);
  // Local rank `root`'s elements to every local rank.
  void broadcast(void* data, size_t count, DType dtype, const Deadline& dl, int root = 0);
  // `in` holds size() parts of `count` elements (part k at k * count); `out` (count elements)
  // gets the fold of every rank's part local_rank(), in rank order as allreduce folds it.
  void reduce_scatter(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                      const Deadline& dl);
  // Every local rank's `count` elements, in local rank order, into `out` (size() * count).
  void allgather(const void* in, void* out, size_t count, DType dtype, const Deadline& dl);

 private:
  enum Word { kArrived, kReduced, kDone };
  uint8_t* slot(int k, uint64_t step) const;
  void publish(Word w, uint64_t step);
  uint64_t load(int k, Word w) const;
  void wait_all(Word w, uint64_t target, const char* op, const Deadline& dl);
  void wait_one(int k, Word w, uint64_t target, const char* op, const Deadline& dl);
  [[noreturn]] void fail_late(Word w, uint64_t target, const char* op, const Deadline& dl);
  void set_desc(uint64_t step, uint64_t what, uint64_t bytes, uint64_t where = 0);
  void check_desc(int k, uint64_t step, uint64_t what, uint64_t bytes, const char* op,
                  uint64_t where = 0) const;
  void reduce_scatter_gather(uint8_t* out, size_t m, uint64_t s, DType dtype, ReduceOp op,
                             const Deadline& dl);

  Segment segment_;
  int me_;
  std::vector<int> ranks_;
  size_t chunk_;
  uint64_t step_ = 0;  // the last pipeline step this rank took part in
  std::vector<const void*> srcs_;
};

}  // namespace weft::dist::shm
