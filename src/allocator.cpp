#include "weft/allocator.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace weft {
namespace {

// Blocks below 4 MiB are rounded up so that blocks of nearly equal size share a list: 64-byte
// granules below 1 MiB, 1/8 of the next power of two up to 4 MiB. Larger blocks are sized to
// the 4 KiB page (below).
constexpr size_t kLarge = size_t(4) << 20;
constexpr size_t kPage = size_t(4) << 10;

size_t round_size(size_t n) {
  if (n == 0) n = 1;
  if (n < (1u << 20)) return (n + 63) & ~size_t(63);
  if (n >= kLarge) return (n + kPage - 1) / kPage * kPage;
  size_t p = 1;
  while (p < n) p <<= 1;
  const size_t step = p / 8;
  return (n + step - 1) / step * step;
}

// Blocks of 4 MiB and more come straight from mmap, at a 2 MiB-aligned
// address, marked for transparent huge pages (one page fault per 2 MiB instead of 512, and
// kernels that walk a weight matrix down its columns stop missing the TLB on every row). Their
// length is the request's rounded to 4 KiB, not to 2 MiB nor to a size class: the kernel backs
// only whole 2 MiB extents of a mapping with huge pages, so the tail takes 4 KiB pages and the
// block costs what the tensor holds (FSDP's shards, their gradients and Adam state are all just
// over a power of two; size classes cost them 3%, 2 MiB rounding up to 12%). A freed block is
// reused for any later request it fits with at most 1/64 to spare, so that nearly equal sizes
// still share blocks; live_large records each block's own size for cpu_free.
constexpr size_t kHugePage = size_t(2) << 20;
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kMmap = false;  // ASan checks heap blocks, not raw mmap'ed ones
#else
constexpr bool kMmap = true;
#endif

void* os_alloc(size_t size) {
  if (size < kLarge || !kMmap) return std::aligned_alloc(64, size);
  void* raw =
      mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > start) munmap(raw, aligned - start);
  if (start + kHugePage > aligned)
    munmap(reinterpret_cast<void*>(aligned + size), start + kHugePage - aligned);
  void* p = reinterpret_cast<void*>(aligned);
  madvise(p, size, MADV_HUGEPAGE);  // advice only: without THP the block still works
  return p;
}

void os_free(void* p, size_t size) {
  if (size < kLarge || !kMmap)
    std::free(p);
  else
    munmap(p, size);
}

struct Cache {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free_lists;  // blocks below kLarge, by size
  std::multimap<size_t, void*> free_large;                    // by their own size
  std::unordered_map<void*, size_t> live_large;               // in use: each one's own size
  size_t allocated = 0, peak = 0, cached = 0;
};

Cache& cache() {
  static Cache* c = new Cache();  // leaked on purpose: tensors may die after static destructors
  return *c;
}

// A cached block for `size` bytes (the smallest large one within 1/64), or null. Holds c.mu.
void* take_cached(Cache& c, size_t size, size_t& got) {
  got = size;
  if (size < kLarge) {
    auto it = c.free_lists.find(size);
    if (it == c.free_lists.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    return p;
  }
  auto it = c.free_large.lower_bound(size);
  if (it == c.free_large.end() || it->first > size + size / 64) return nullptr;
  void* p = it->second;
  got = it->first;
  c.free_large.erase(it);
  return p;
}

}  // namespace

void* cpu_alloc(size_t nbytes) {
  const size_t want = round_size(nbytes);
  Cache& c = cache();
  // Counts a block of `size` bytes as in use. Holds c.mu.
  auto count = [&c](void* p, size_t size) {
    if (size >= kLarge) c.live_large[p] = size;
    c.allocated += size;
    if (c.allocated > c.peak) c.peak = c.allocated;
    return p;
  };
  {
    std::lock_guard<std::mutex> lock(c.mu);
    size_t size = want;
    if (void* p = take_cached(c, want, size)) {
      c.cached -= size;
      return count(p, size);
    }
  }
  void* p = os_alloc(want);
  if (!p) {
    empty_cache();
    p = os_alloc(want);
    if (!p) throw std::bad_alloc();
  }
  std::lock_guard<std::mutex> lock(c.mu);
  return count(p, want);
}

void cpu_free(void* ptr, size_t nbytes) {
  if (!ptr) return;
  size_t size = round_size(nbytes);
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (size >= kLarge) {
    auto it = c.live_large.find(ptr);
    if (it != c.live_large.end()) {
      size = it->second;
      c.live_large.erase(it);
    }
    c.free_large.emplace(size, ptr);
  } else {
    c.free_lists[size].push_back(ptr);
  }
  c.allocated -= size;
  c.cached += size;
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
  for (auto& [size, p] : c.free_large) os_free(p, size);
  c.free_large.clear();
  c.cached = 0;
}

}  // namespace weft
