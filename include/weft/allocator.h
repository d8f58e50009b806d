// CPU caching allocator. Fresh pages cost ~3 ms per MB on these machines (DESIGN.md), so
// freed blocks are kept in per-size free lists and reused; nothing is returned to the OS
// until empty_cache(). Thread-safe (DataLoader workers, DataParallel replicas). Blocks are
// 64-byte aligned.
#pragma once

#include <cstddef>

namespace weft {

void* cpu_alloc(size_t nbytes);
void cpu_free(void* ptr, size_t nbytes);

struct AllocatorStats {
  size_t allocated_bytes;       // in use by tensors now
  size_t peak_allocated_bytes;  // high-water mark of allocated_bytes
  size_t cached_bytes;          // held in free lists
};
AllocatorStats cpu_allocator_stats();
void reset_peak_allocated_bytes();
void empty_cache();  // return all cached blocks to the OS

}  // namespace weft
