#include "distributed/shm/symmetric.h"

namespace weft::dist::shm {

std::shared_ptr<SymmetricBuffer> SymmetricBuffer::make(ShmGroup& group, uint64_t id, size_t bytes,
                                                       const Deadline& dl) {
  const size_t stride = (bytes + 4095) / 4096 * 4096;
  std::optional<Segment> seg = group.share_segment(stride * group.size(), dl);
  if (!seg) return nullptr;
  return std::shared_ptr<SymmetricBuffer>(
      new SymmetricBuffer(std::move(*seg), group.local_rank(), id, bytes, stride));
}

bool SymmetricBuffer::holds(const void* p, size_t n, size_t& offset) const {
  const auto* b = static_cast<const uint8_t*>(p);
  if (b < mine() || b + n > mine() + bytes_) return false;
  offset = static_cast<size_t>(b - mine());
  return true;
}

}  // namespace weft::dist::shm
