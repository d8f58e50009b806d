#include "weft/allocator.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace weft {
namespace {

// Sizes are rounded up so that blocks of nearly equal size share a list: 64-byte granules
// below 1 MiB, then 1/8 of the next power of two up to 4 MiB, 1/64 of it above (at most 1/32
// of the size wasted: with 1/8, a 16.8 MB block took 21 MB, and FSDP's shards and their
// optimizer state, all just above a power of two, a quarter more than they hold).
size_t round_size(size_t n) {
  if (n == 0) n = 1;
  if (n < (1u << 20)) return (n + 63) & ~size_t(63);
  size_t p = 1;
  while (p < n) p <<= 1;
  size_t step = p > (size_t(4) << 20) ? p / 64 : p / 8;
  return (n + step - 1) / step * step;
}

// Blocks of 4 MiB and more come straight from mmap, 2 MiB-aligned and marked for transparent
// huge pages: one page fault per 2 MiB instead of 512, and kernels that walk a weight matrix
// down its columns (Linear's input gradient) stop missing the TLB on every row.
constexpr size_t kHugePage = size_t(2) << 20;
#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kHugeMin = SIZE_MAX;  // ASan checks heap blocks, not raw mmap'ed ones
#else
constexpr size_t kHugeMin = size_t(4) << 20;
#endif

size_t huge_len(size_t size) { return (size + kHugePage - 1) / kHugePage * kHugePage; }

void* os_alloc(size_t size) {
  if (size < kHugeMin) return std::aligned_alloc(64, size);
  const size_t len = huge_len(size);
  void* raw =
      mmap(nullptr, len + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > start) munmap(raw, aligned - start);
  if (start + kHugePage > aligned)
    munmap(reinterpret_cast<void*>(aligned + len), start + kHugePage - aligned);
  void* p = reinterpret_cast<void*>(aligned);
  madvise(p, len, MADV_HUGEPAGE);  // advice only: without THP the block still works
  return p;
}

void os_free(void* p, size_t size) {
  if (size < kHugeMin)
    std::free(p);
  else
    munmap(p, huge_len(size));
}

struct Cache {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free_lists;
  size_t allocated = 0, peak = 0, cached = 0;
};

Cache& cache() {
  static Cache* c = new Cache();  // leaked on purpose: tensors may die after static destructors
  return *c;
}

}  // namespace

void* cpu_alloc(size_t nbytes) {
  size_t size = round_size(nbytes);
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    c.allocated += size;
    if (c.allocated > c.peak) c.peak = c.allocated;
    auto it = c.free_lists.find(size);
    if (it != c.free_lists.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      c.cached -= size;
      return p;
    }
  }
  void* p = os_alloc(size);
  if (!p) {
    empty_cache();
    p = os_alloc(size);
    if (!p) throw std::bad_alloc();
  }
  return p;
}

void cpu_free(void* ptr, size_t nbytes) {
  if (!ptr) return;
  size_t size = round_size(nbytes);
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.allocated -= size;
  c.cached += size;
  c.free_lists[size].push_back(ptr);
}

AllocatorStats cpu_allocator_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return {c.allocated, c.peak, c.cached};
}

void reset_peak_allocated_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.peak = c.allocated;
}

void empty_cache() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& [size, list] : c.free_lists)
    for (void* p : list) os_free(p, size);
  c.free_lists.clear();
  c.cached = 0;
}

}  // namespace weft
