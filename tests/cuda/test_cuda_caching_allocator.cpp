// The CUDA caching allocator's bookkeeping (BlockPool) over a fake device: segment sizes, reuse,
// splitting and merging, stream ownership, record_stream's deferred reuse, out-of-memory
// retry, statistics and empty_cache. Runs without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <set>

#include "cuda/caching_allocator_core.h"
#include "weft/error.h"

using weft::cuda::detail::BlockPool;
using weft::cuda::detail::EventId;
using weft::cuda::detail::RawAllocator;
using weft::cuda::detail::StreamId;

namespace {

constexpr size_t kMiB = size_t(1) << 20;

// Hands out addresses from a fake address space (never dereferenced), up to `capacity` bytes
// in use; events complete when the test says so.
class FakeDevice : public RawAllocator {
 public:
  explicit FakeDevice(size_t capacity = SIZE_MAX) : capacity_(capacity) {}
  void* malloc(size_t bytes) override {
    if (in_use_ + bytes > capacity_) return nullptr;
    in_use_ += bytes;
    ++mallocs;
    void* p = reinterpret_cast<void*>(next_);
    next_ += bytes + (size_t(1) << 30);  // segments are far apart: no accidental adjacency
    live_[p] = bytes;
    return p;
  }
  void free(void* p) override {
    auto it = live_.find(p);
    ASSERT_NE(it, live_.end()) << "free of an unknown segment";
    in_use_ -= it->second;
    live_.erase(it);
    ++frees;
  }
  EventId record_event(StreamId) override {
    auto* e = reinterpret_cast<EventId>(++next_event_);
    pending_.insert(e);
    return e;
  }
  bool event_done(EventId e) override { return !pending_.count(e); }
  void wait_event(EventId e) override {
    pending_.erase(e);
    ++waits;
  }
  void destroy_event(EventId e) override { destroyed.insert(e); }

  void complete_all_events() { pending_.clear(); }
  size_t in_use() const { return in_use_; }
  size_t live_segments() const { return live_.size(); }
  int mallocs = 0, frees = 0, waits = 0;
  std::set<EventId> destroyed;

 private:
  size_t capacity_;
  size_t in_use_ = 0;
  uintptr_t next_ = uintptr_t(1) << 40;
  uintptr_t next_event_ = 0;
  std::set<EventId> pending_;
  std::map<void*, size_t> live_;
};

StreamId stream(int i) { return reinterpret_cast<StreamId>(uintptr_t(0x1000 + i)); }
char* as_bytes(void* p) { return static_cast<char*>(p); }

TEST(CudaCachingAllocator, RoundsSizesTo512Bytes) {
  EXPECT_EQ(BlockPool::round_size(1), 512u);
  EXPECT_EQ(BlockPool::round_size(512), 512u);
  EXPECT_EQ(BlockPool::round_size(513), 1024u);
  EXPECT_EQ(BlockPool::round_size(3 * kMiB + 1), 3 * kMiB + 512);
}

TEST(CudaCachingAllocator, SmallRequestsShareOneTwoMiBSegment) {
  FakeDevice dev;
  BlockPool pool(dev, "fake:0");
  void* a = pool.allocate(1000, stream(0));
  void* b = pool.allocate(3000, stream(0));
  EXPECT_EQ(dev.mallocs, 1);
  EXPECT_EQ(dev.in_use(), 2 * kMiB);
  EXPECT_EQ(as_bytes(b), as_bytes(a) + 1024);  // split off right after a's rounded size
  EXPECT_EQ(pool.block_size(a), 1024u);
  EXPECT_EQ(pool.block_size(b), 3072u);
  auto s = pool.stats();
  EXPECT_EQ(s.allocated, 1024u + 3072u);
  EXPECT_EQ(s.reserved, 2 * kMiB);
  pool.free(a);
  pool.free(b);
}

TEST(CudaCachingAllocator, FreedBlocksAreReusedWithoutNewMallocs) {
  FakeDevice dev;
  BlockPool pool(dev, "fake:0");
  void* a = pool.allocate(4 * kMiB, stream(0));
  EXPECT_EQ(dev.mallocs, 1);
  EXPECT_EQ(dev.in_use(), 20 * kMiB);  // 1..10 MiB requests come from 20 MiB segments
  pool.free(a);
  // A "training step" of the same sizes, many times: no raw allocation at all.
  for (int step = 0; step < 10; ++step) {
    void* x = pool.allocate(4 * kMiB, stream(0));
    void* y = pool.allocate(100, stream(0));
    void* z = pool.allocate(3 * kMiB, stream(0));
    EXPECT_EQ(x, a);
    pool.free(y);
    pool.free(x);
    pool.free(z);
  }
  EXPECT_EQ(dev.mallocs, 2);  // the 20 MiB segment and one 2 MiB small segment
  EXPECT_EQ(dev.frees, 0);
}

TEST(CudaCachingAllocator, LargeSegmentsSplitAndMergeBack) {
  FakeDevice dev;
  BlockPool pool(dev, "fake:0");
  void* a = pool.allocate(5 * kMiB, stream(0));
  void* b = pool.allocate(5 * kMiB, stream(0));
  void* c = pool.allocate(5 * kMiB, stream(0));
  EXPECT_EQ(dev.mallocs, 1);  // three 5 MiB blocks in one 20 MiB segment
  EXPECT_EQ(as_bytes(b), as_bytes(a) + 5 * kMiB);
  EXPECT_EQ(as_bytes(c), as_bytes(b) + 5 * kMiB);
  pool.free(b);
  pool.free(a);
  pool.free(c);  // all merged back into one 20 MiB block
  void* d = pool.allocate(18 * kMiB, stream(0));
  EXPECT_EQ(d, a);
  EXPECT_EQ(dev.mallocs, 1);
  // The 2 MiB rest (> 1 MiB) was split off and serves a request of its own.
  void* e = pool.allocate(2 * kMiB, stream(0));
  EXPECT_EQ(as_bytes(e), as_bytes(a) + 18 * kMiB);
  EXPECT_EQ(dev.mallocs, 1);
  pool.free(d);
  pool.free(e);
}

TEST(CudaCachingAllocator, RemainderOfOneMiBOrLessIsNotSplitInLargeSegments) {
  FakeDevice dev;
  BlockPool pool(dev, "fake:0");
  void* a = pool.allocate(19 * kMiB + 512, stream(0));  // leaves 1 MiB - 512 B: kept whole
  EXPECT_EQ(pool.block_size(a), 20 * kMiB);
  pool.free(a);
}

TEST(CudaCachingAllocator, BigRequestsGetTheirOwnSegmentRoundedTo2MiB) {
  FakeDevice dev;
  BlockPool pool(dev, "fake:0");
  void* a = pool.allocate(33 * kMiB, stream(0));
  EXPECT_EQ(dev.in_use(), 34 * kMiB);
  EXPECT_EQ(pool.block_size(a), 34 * kMiB);  // 1 MiB rest is not worth a block
  pool.free(a);
}

TEST(CudaCachingAllocator, BlocksBelongToTheirAllocationStream) {
  FakeDevice dev;
  BlockPool pool(dev, "fake:0");
  void* a = pool.allocate(1000, stream(0));
  pool.free(a);
  void* b = pool.allocate(1000, stream(1));  // another stream never gets stream 0's block
  EXPECT_NE(a, b);
  EXPECT_EQ(dev.mallocs, 2);
  void* c = pool.allocate(1000, stream(0));
  EXPECT_EQ(c, a);
  pool.free(b);
  pool.free(c);
}

TEST(CudaCachingAllocator, RecordStreamDefersReuseUntilTheEventsComplete) {
  FakeDevice dev;
  BlockPool pool(dev, "fake:0");
  void* a = pool.allocate(1000, stream(0));
  pool.record_stream(a, stream(7));  // e.g. a NCCL stream reads it
  pool.record_stream(a, stream(7));  // recorded once
  pool.record_stream(a, stream(0));  // its own stream: nothing to do
  pool.free(a);
  EXPECT_EQ(pool.stats().allocated, 0u);
  void* b = pool.allocate(1000, stream(0));
  EXPECT_NE(b, a);  // a is still in use on stream 7
  dev.complete_all_events();
  void* c = pool.allocate(1000, stream(0));
  EXPECT_EQ(c, a);
  EXPECT_EQ(dev.destroyed.size(), 1u);  // one event, for stream 7, destroyed once seen done
  pool.free(b);
  pool.free(c);
}

TEST(CudaCachingAllocator, OutOfMemoryReleasesTheCacheAndRetries) {
  FakeDevice dev(40 * kMiB);
  BlockPool pool(dev, "fake:0");
  void* a = pool.allocate(30 * kMiB, stream(0));
  pool.free(a);                                   // cached: 30 MiB of the 40 reserved
  void* b = pool.allocate(20 * kMiB, stream(1));  // other stream: needs a new 20 MiB segment
  EXPECT_EQ(dev.frees, 1);                        // ... so the cached segment went back first
  EXPECT_EQ(pool.stats().raw_frees, 1u);
  EXPECT_EQ(dev.live_segments(), 1u);
  try {
    pool.allocate(30 * kMiB, stream(1));
    FAIL() << "expected an out-of-memory error";
  } catch (const weft::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("fake:0: out of memory"), std::string::npos) << msg;
    EXPECT_NE(msg.find("20.0 MiB allocated"), std::string::npos) << msg;
  }
  pool.free(b);
}

// A block freed while another stream still used it is cached only once that stream's work is
// done; out of memory, the pool waits for such blocks before giving the cache back and retrying.
TEST(CudaCachingAllocator, OutOfMemoryWaitsForBlocksStillInUseOnOtherStreams) {
  FakeDevice dev(40 * kMiB);
  BlockPool pool(dev, "fake:0");
  void* a = pool.allocate(30 * kMiB, stream(0));
  pool.record_stream(a, stream(5));  // e.g. NCCL's stream read it
  pool.free(a);                      // pending on stream 5's event: not yet reusable
  void* b = pool.allocate(30 * kMiB, stream(1));
  EXPECT_EQ(dev.waits, 1);  // waited for the event, then released the segment and retried
  EXPECT_EQ(dev.frees, 1);
  EXPECT_EQ(dev.live_segments(), 1u);
  pool.free(b);
}

TEST(CudaCachingAllocator, StatsPeakAndEmptyCache) {
  FakeDevice dev;
  BlockPool pool(dev, "fake:0");
  void* a = pool.allocate(1 * kMiB, stream(0));   // small pool, 2 MiB segment
  void* b = pool.allocate(12 * kMiB, stream(0));  // its own 12 MiB segment
  auto s = pool.stats();
  EXPECT_EQ(s.allocated, 13 * kMiB);
  EXPECT_EQ(s.peak_allocated, 13 * kMiB);
  EXPECT_EQ(s.reserved, 14 * kMiB);
  pool.free(b);
  s = pool.stats();
  EXPECT_EQ(s.allocated, 1 * kMiB);
  EXPECT_EQ(s.peak_allocated, 13 * kMiB);
  pool.reset_peak();
  EXPECT_EQ(pool.stats().peak_allocated, 1 * kMiB);
  pool.empty_cache();  // the 12 MiB segment is wholly free; the small one is half used
  EXPECT_EQ(dev.frees, 1);
  EXPECT_EQ(pool.stats().reserved, 2 * kMiB);
  pool.free(a);
  pool.empty_cache();
  EXPECT_EQ(dev.frees, 2);
  EXPECT_EQ(dev.in_use(), 0u);
  EXPECT_EQ(pool.stats().reserved, 0u);
}

TEST(CudaCachingAllocator, EmptyCacheKeepsBlocksWaitingOnEvents) {
  FakeDevice dev;
  BlockPool pool(dev, "fake:0");
  void* a = pool.allocate(1000, stream(0));
  pool.record_stream(a, stream(3));
  pool.free(a);
  pool.empty_cache();
  EXPECT_EQ(dev.frees, 0);
  dev.complete_all_events();
  pool.empty_cache();
  EXPECT_EQ(dev.frees, 1);
}

TEST(CudaCachingAllocator, ZeroBytesAndBadFrees) {
  FakeDevice dev;
  BlockPool pool(dev, "fake:0");
  EXPECT_EQ(pool.allocate(0, stream(0)), nullptr);
  pool.free(nullptr);
  EXPECT_EQ(dev.mallocs, 0);
  void* a = pool.allocate(100, stream(0));
  pool.free(a);
  EXPECT_THROW(pool.free(a), weft::Error);  // double free
  int x = 0;
  EXPECT_THROW(pool.free(&x), weft::Error);
  EXPECT_THROW(pool.record_stream(&x, stream(1)), weft::Error);
}

}  // namespace
