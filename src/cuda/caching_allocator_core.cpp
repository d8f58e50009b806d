#include "cuda/caching_allocator_core.h"

#include <algorithm>
#include <functional>

#include "weft/error.h"

namespace weft::cuda::detail {

namespace {
std::string mib(size_t bytes) {
  return std::to_string(bytes / (1 << 20)) + "." + std::to_string(bytes % (1 << 20) * 10 >> 20) +
         " MiB";
}
}  // namespace

bool BlockPool::Order::operator()(const Block* a, const Block* b) const {
  if (a->stream != b->stream) return std::less<StreamId>()(a->stream, b->stream);
  if (a->size != b->size) return a->size < b->size;
  return std::less<char*>()(a->ptr, b->ptr);
}

BlockPool::BlockPool(RawAllocator& raw, std::string name) : raw_(raw), name_(std::move(name)) {}

BlockPool::~BlockPool() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [event, block] : pending_) {
    (void)block;
    raw_.destroy_event(event);
  }
  pending_.clear();
  release_free_segments();
}

size_t BlockPool::round_size(size_t bytes) {
  if (bytes < kMinBlock) return kMinBlock;
  return (bytes + kMinBlock - 1) / kMinBlock * kMinBlock;
}

BlockPool::Block* BlockPool::find_free(size_t size, StreamId stream, bool small) {
  FreeSet& pool = small ? small_ : large_;
  Block key{nullptr, size, stream, small};
  auto it = pool.lower_bound(&key);
  if (it == pool.end() || (*it)->stream != stream) return nullptr;
  Block* b = *it;
  pool.erase(it);
  return b;
}

BlockPool::Block* BlockPool::new_segment(size_t size, StreamId stream, bool small) {
  const size_t seg = small                   ? kSmallBuffer
                     : size < kMinLargeAlloc ? kLargeBuffer
                                             : (size + kRoundLarge - 1) / kRoundLarge * kRoundLarge;
  void* p = raw_.malloc(seg);
  if (!p) {
    // Out of memory: wait for the blocks other streams still use (record_stream), give every
    // cached segment back and try once more, as PyTorch does.
    for (auto& [event, block] : pending_) {
      (void)block;
      raw_.wait_event(event);
    }
    process_events();
    release_free_segments();
    p = raw_.malloc(seg);
  }
  if (!p) {
    WEFT_ERROR(name_, ": out of memory: tried to allocate ", mib(size), " (a segment of ", mib(seg),
               "); ", mib(stats_.allocated), " allocated by tensors, ", mib(stats_.reserved),
               " reserved in total by weft");
  }
  ++stats_.raw_mallocs;
  stats_.reserved += seg;
  return new Block{static_cast<char*>(p), seg, stream, small};
}

void* BlockPool::allocate(size_t bytes, StreamId stream) {
  if (bytes == 0) return nullptr;
  const size_t size = round_size(bytes);
  const bool small = size <= kSmallSize;
  std::lock_guard<std::mutex> lock(mu_);
  process_events();
  Block* b = find_free(size, stream, small);
  if (!b) b = new_segment(size, stream, small);
  const size_t rest = b->size - size;
  if (small ? rest >= kMinBlock : rest > kSmallSize) {
    // The tail becomes a free block of its own, next to this one in the segment.
    Block* tail = new Block{b->ptr + size, rest, stream, small};
    tail->prev = b;
    tail->next = b->next;
    if (b->next) b->next->prev = tail;
    b->next = tail;
    b->size = size;
    pool_of(tail).insert(tail);
  }
  b->allocated = true;
  allocated_.emplace(b->ptr, b);
  stats_.allocated += b->size;
  stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
  return b->ptr;
}

void BlockPool::free(void* ptr) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = allocated_.find(ptr);
  WEFT_CHECK(it != allocated_.end(), name_, ": free of a pointer the caching allocator did not ",
             "hand out (or freed twice)");
  Block* b = it->second;
  allocated_.erase(it);
  b->allocated = false;
  stats_.allocated -= b->size;
  if (!b->uses.empty()) {
    // Work queued on the other streams may still read or write the block: reuse it only once
    // everything queued there up to now has run.
    for (StreamId s : b->uses) {
      pending_.emplace_back(raw_.record_event(s), b);
      ++b->pending_events;
    }
    b->uses.clear();
    return;
  }
  insert_free(b);
}

void BlockPool::record_stream(void* ptr, StreamId stream) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = allocated_.find(ptr);
  WEFT_CHECK(it != allocated_.end(), name_, ": record_stream on memory the caching allocator ",
             "did not hand out");
  Block* b = it->second;
  if (stream == b->stream) return;  // ordered with the block's own stream already
  if (std::find(b->uses.begin(), b->uses.end(), stream) == b->uses.end()) b->uses.push_back(stream);
}

void BlockPool::insert_free(Block* b) {
  FreeSet& pool = pool_of(b);
  auto mergeable = [](const Block* n) { return n && !n->allocated && n->pending_events == 0; };
  if (mergeable(b->prev)) {
    Block* p = b->prev;
    pool.erase(p);
    p->size += b->size;
    p->next = b->next;
    if (b->next) b->next->prev = p;
    delete b;
    b = p;
  }
  if (mergeable(b->next)) {
    Block* n = b->next;
    pool.erase(n);
    b->size += n->size;
    b->next = n->next;
    if (n->next) n->next->prev = b;
    delete n;
  }
  pool.insert(b);
}

void BlockPool::process_events() {
  // Events complete in stream order, but blocks may wait on several streams: check them all.
  size_t kept = 0;
  for (size_t i = 0; i < pending_.size(); ++i) {
    auto [event, block] = pending_[i];
    if (!raw_.event_done(event)) {
      pending_[kept++] = pending_[i];
      continue;
    }
    raw_.destroy_event(event);
    if (--block->pending_events == 0) insert_free(block);
  }
  pending_.resize(kept);
}

void BlockPool::release_free_segments() {
  for (FreeSet* pool : {&small_, &large_}) {
    for (auto it = pool->begin(); it != pool->end();) {
      Block* b = *it;
      if (b->prev || b->next) {  // part of a segment still (partly) in use
        ++it;
        continue;
      }
      raw_.free(b->ptr);
      ++stats_.raw_frees;
      stats_.reserved -= b->size;
      it = pool->erase(it);
      delete b;
    }
  }
}

void BlockPool::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  process_events();
  release_free_segments();
}

PoolStats BlockPool::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void BlockPool::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_allocated = stats_.allocated;
}

size_t BlockPool::block_size(void* ptr) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = allocated_.find(ptr);
  WEFT_CHECK(it != allocated_.end(), name_, ": not an allocated block");
  return it->second->size;
}

}  // namespace weft::cuda::detail
