// Internal: the bookkeeping core of the CUDA caching allocator, free of CUDA calls so that it
// is unit-tested on the CPU with a fake RawAllocator. Guarantees: memory comes from the raw
// allocator only when no cached block fits (never freed back except by empty_cache() or to
// retry an out-of-memory), blocks are reused only by allocations on the stream they were
// allocated on, a block also used on other streams (record_stream) is reused only after
// events recorded at its free have completed, and large segments are split and re-merged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace weft::cuda::detail {

using StreamId = void*;  // a cudaStream_t; only compared here
using EventId = void*;   // a cudaEvent_t; only passed back to the RawAllocator

// What the pool needs from the device (cudaMalloc and events); faked in tests.
class RawAllocator {
 public:
  virtual ~RawAllocator() = default;
  virtual void* malloc(size_t bytes) = 0;  // nullptr when the device is out of memory
  virtual void free(void* ptr) = 0;
  virtual EventId record_event(StreamId stream) = 0;  // marks the stream's current point
  virtual bool event_done(EventId event) = 0;
  virtual void wait_event(EventId event) = 0;  // blocks the host until the event completes
  virtual void destroy_event(EventId event) = 0;
};

struct PoolStats {
  size_t allocated = 0, peak_allocated = 0, reserved = 0;
  uint64_t raw_mallocs = 0, raw_frees = 0;
};

class BlockPool {
 public:
  // Sizes as PyTorch's CUDACachingAllocator: requests round up to 512 bytes; those up to 1 MiB
  // come from 2 MiB segments, those up to 10 MiB from 20 MiB segments, bigger ones from
  // segments rounded to 2 MiB. A block is split when the rest is worth keeping (>= 512 bytes
  // in small segments, > 1 MiB in large ones).
  static constexpr size_t kMinBlock = 512;
  static constexpr size_t kSmallSize = size_t(1) << 20;
  static constexpr size_t kSmallBuffer = size_t(2) << 20;
  static constexpr size_t kMinLargeAlloc = size_t(10) << 20;
  static constexpr size_t kLargeBuffer = size_t(20) << 20;
  static constexpr size_t kRoundLarge = size_t(2) << 20;

  // `name` ("cuda:0") is used in messages.
  BlockPool(RawAllocator& raw, std::string name);
  ~BlockPool();  // returns cached segments; blocks still allocated are leaked (tensors alive)
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // nullptr for 0 bytes; throws weft::Error ("out of memory", with the pool's figures) when the
  // raw allocator fails even after the cache was released.
  void* allocate(size_t bytes, StreamId stream);
  void free(void* ptr);
  void record_stream(void* ptr, StreamId stream);
  // Returns wholly free segments to the raw allocator (blocks waiting on events stay).
  void empty_cache();
  PoolStats stats();
  void reset_peak();
  size_t block_size(void* ptr);  // rounded size of an allocated block (for tests/messages)

  static size_t round_size(size_t bytes);

 private:
  struct Block {
    Block(char* p, size_t s, StreamId st, bool sm) : ptr(p), size(s), stream(st), small(sm) {}
    char* ptr;
    size_t size;
    StreamId stream;
    bool small;  // from a small (2 MiB) segment
    bool allocated = false;
    int pending_events = 0;  // events recorded at free() still outstanding
    Block* prev = nullptr;   // neighbours within the segment
    Block* next = nullptr;
    std::vector<StreamId> uses;  // other streams (record_stream)
  };
  struct Order {  // free blocks by (stream, size, address): best fit on the right stream
    bool operator()(const Block* a, const Block* b) const;
  };
  using FreeSet = std::set<Block*, Order>;

  FreeSet& pool_of(const Block* b) { return b->small ? small_ : large_; }
  Block* find_free(size_t size, StreamId stream, bool small);
  Block* new_segment(size_t size, StreamId stream, bool small);
  void release_free_segments();  // caller holds mu_
  void insert_free(Block* b);    // merges with free neighbours
  void process_events();

  RawAllocator& raw_;
  std::string name_;
  std::mutex mu_;
  FreeSet small_, large_;
  std::unordered_map<void*, Block*> allocated_;
  std::vector<std::pair<EventId, Block*>> pending_;  // events recorded at free()
  PoolStats stats_;
};

}  // namespace weft::cuda::detail
