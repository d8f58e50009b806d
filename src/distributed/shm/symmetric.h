// Internal: one buffer per local rank, all in one shared segment that every rank of the host maps
// (Note [Symmetric buffers] in docs/ARCHITECTURE.md). Made collectively through the host's
// ShmGroup, in its op order: either every local rank gets it or none does, and the segment's name
// is gone before any rank has it, so its memory goes with the last rank that holds it, however
// that rank ends.
#pragma once

#include <cstdint>
#include <memory>

#include "distributed/shm/shm_group.h"

namespace weft::dist::shm {

class SymmetricBuffer {
 public:
  // Called by every local rank of `group` with the same `id` and `bytes`, in the same place
  // among the group's ops. Null on every local rank alike when some rank could not map it.
  static std::shared_ptr<SymmetricBuffer> make(ShmGroup& group, uint64_t id, size_t bytes,
                                               const Deadline& dl);

  // Local rank k's buffer (`bytes()` long, 4 KiB aligned) in this process's mapping.
  uint8_t* region(int k) const { return static_cast<uint8_t*>(seg_.data()) + k * stride_; }
  uint8_t* mine() const { return region(me_); }
  size_t bytes() const { return bytes_; }
  uint64_t id() const { return id_; }
  // Whether [p, p + n) lies in this rank's buffer; then `offset` is p's place in it.
  bool holds(const void* p, size_t n, size_t& offset) const;

 private:
  SymmetricBuffer(Segment seg, int me, uint64_t id, size_t bytes, size_t stride)
      : seg_(std::move(seg)), me_(me), id_(id), bytes_(bytes), stride_(stride) {}

  Segment seg_;
  int me_;
  uint64_t id_;
  size_t bytes_, stride_;
};

}  // namespace weft::dist::shm
