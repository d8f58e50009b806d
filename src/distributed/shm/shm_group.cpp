#include "distributed/shm/shm_group.h"

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "distributed/collectives.h"
#include "distributed/shm/fold.h"
#include "distributed/shm/symmetric.h"

namespace weft::dist::shm {

// Note [Shared-memory all-reduce] (docs/ARCHITECTURE.md): the layout, who writes what when.
namespace {

constexpr uint64_t kMagic = 0x316d687374666577ULL;  // "weftshm1"
constexpr uint32_t kVersion = 2;
constexpr uint64_t kBuffers = 4;            // pipeline depth: a rank may run this many steps ahead
constexpr size_t kDirectBytes = 64 * 1024;  // up to this per step every rank folds it all
constexpr size_t kPartAlign = 64;           // reduce-scatter parts start on cache lines

// Waiting: spin, then yield, then sleep on the futex in slices that recheck liveness.
constexpr int kSpins = 200;
constexpr auto kYieldFor = std::chrono::microseconds(1000);
constexpr auto kSleepSlice = std::chrono::milliseconds(10);

struct Header {
  uint64_t magic;
  uint32_t version, nranks;
  uint64_t chunk, buffers;
};

// One counter per cache line; `sleepers` counts the peers asleep on it (futex on its low half).
struct alignas(64) Counter {
  uint64_t value;
  uint32_t sleepers;
};
struct RankCtl {
  Counter word[3];  // ShmGroup::Word
};
// What a rank staged in one buffer: which op (kind, dtype, op) over how many bytes in all, and
// for an op on symmetric buffers which buffer and where in it.
struct alignas(64) Desc {
  uint64_t what, bytes, where;
};

static_assert(std::endian::native == std::endian::little,
              "the futex waits on a counter's low half");
static_assert(std::atomic_ref<uint64_t>::is_always_lock_free);
static_assert(std::atomic_ref<uint32_t>::is_always_lock_free);

constexpr size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }
constexpr size_t kCtlOffset = 4096;
size_t desc_offset(int n) { return kCtlOffset + n * sizeof(RankCtl); }
size_t data_offset(int n) { return round_up(desc_offset(n) + n * kBuffers * sizeof(Desc), 4096); }

RankCtl& ctl(const Segment& seg, int k) {
  return reinterpret_cast<RankCtl*>(static_cast<uint8_t*>(seg.data()) + kCtlOffset)[k];
}

Desc& desc(const Segment& seg, int n, int k, uint64_t step) {
  auto* base = reinterpret_cast<Desc*>(static_cast<uint8_t*>(seg.data()) + desc_offset(n));
  return base[static_cast<size_t>(k) * kBuffers + step % kBuffers];
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

void futex_wait(uint64_t* word, uint32_t seen, Clock::duration d) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, seen, &ts, nullptr, 0);
}

void futex_wake(uint64_t* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

enum Kind : uint64_t {
  kAllreduce = 1,
  kBroadcast = 2,
  kReduceScatter = 3,
  kAllgather = 4,
  kSymmetricAllreduce = 5,
  kShare = 6
};
uint64_t describe(Kind kind, DType dtype, ReduceOp op) {
  return kind << 16 | static_cast<uint64_t>(dtype) << 8 | static_cast<uint64_t>(op);
}
std::string describe_str(uint64_t what, uint64_t bytes) {
  const auto kind = what >> 16;
  const auto dtype = static_cast<DType>((what >> 8) & 0xff);
  std::string s;
  switch (kind) {
    case kAllreduce:
    case kSymmetricAllreduce:
    case kReduceScatter:
      s.append(kind == kReduceScatter ? "reduce_scatter(" : "allreduce(");
      s.append(to_string(static_cast<ReduceOp>(what & 0xff))).append(")");
      break;
    case kBroadcast:
      s = "broadcast";
      break;
    case kAllgather:
      s = "allgather";
      break;
    case kShare:
      return "empty_symmetric of " + std::to_string(bytes) + " bytes";
    default:
      s.append("op ").append(std::to_string(what));
  }
  s.append(" of ").append(std::to_string(bytes)).append(" bytes of ").append(dtype_name(dtype));
  if (kind == kSymmetricAllreduce) s.append(" in a symmetric buffer");
  return s;
}

// Which symmetric buffer, and where in it (Desc::where).
uint64_t locate(uint64_t id, size_t offset) { return id << 40 | offset; }

const char* word_name(int w) {
  return w == 0 ? "did not arrive" : w == 1 ? "did not finish its share" : "did not finish reading";
}

}  // namespace

size_t ShmGroup::segment_bytes(int n, size_t chunk) {
  return data_offset(n) + n * kBuffers * chunk;
}

Segment ShmGroup::create_segment(int n, size_t chunk) {
  Segment seg = Segment::create(segment_bytes(n, chunk));
  auto* h = static_cast<Header*>(seg.data());
  h->version = kVersion;
  h->nranks = static_cast<uint32_t>(n);
  h->chunk = chunk;
  h->buffers = kBuffers;
  std::atomic_ref<uint64_t>(h->magic).store(kMagic, std::memory_order_release);
  return seg;
}

ShmGroup::ShmGroup(Segment segment, int local_rank, std::vector<int> ranks, size_t chunk)
    : segment_(std::move(segment)), me_(local_rank), ranks_(std::move(ranks)), chunk_(chunk) {
  auto* h = static_cast<Header*>(segment_.data());
  const uint64_t magic = std::atomic_ref<uint64_t>(h->magic).load(std::memory_order_acquire);
  WEFT_CHECK_DIST(magic == kMagic && h->version == kVersion && h->nranks == ranks_.size() &&
                      h->chunk == chunk && h->buffers == kBuffers,
                  "shared memory: ", segment_.name(), " is not a weft segment for ", ranks_.size(),
                  " ranks and ", chunk, "-byte chunks");
  WEFT_CHECK_DIST(chunk_ % 64 == 0, "shared memory: chunk of ", chunk_,
                  " bytes is not a multiple of 64");
  segment_.hold(me_);
  srcs_.resize(ranks_.size());
}

uint8_t* ShmGroup::slot(int k, uint64_t step) const {
  const size_t index = static_cast<size_t>(k) * kBuffers + step % kBuffers;
  return static_cast<uint8_t*>(segment_.data()) + data_offset(size()) + index * chunk_;
}

uint64_t ShmGroup::load(int k, Word w) const {
  return std::atomic_ref<uint64_t>(ctl(segment_, k).word[w].value).load(std::memory_order_acquire);
}

// seq_cst on both sides (here and in wait_one): either this store sees the sleeper's count, or
// the sleeper sees this value before it sleeps; the futex rechecks the value as it sleeps.
void ShmGroup::publish(Word w, uint64_t step) {
  Counter& c = ctl(segment_, me_).word[w];
  std::atomic_ref<uint64_t>(c.value).store(step, std::memory_order_seq_cst);
  if (std::atomic_ref<uint32_t>(c.sleepers).load(std::memory_order_seq_cst) != 0)
    futex_wake(&c.value);
}

void ShmGroup::wait_all(Word w, uint64_t target, const char* op, const Deadline& dl) {
  for (int k = 0; k < size(); ++k)
    if (k != me_ && load(k, w) < target) wait_one(k, w, target, op, dl);
}

void ShmGroup::wait_one(int k, Word w, uint64_t target, const char* op, const Deadline& dl) {
  for (int i = 0; i < kSpins; ++i) {
    if (load(k, w) >= target) return;
    cpu_relax();
  }
  for (const auto until = Clock::now() + kYieldFor; Clock::now() < until;) {
    if (load(k, w) >= target) return;
    sched_yield();
  }
  Counter& c = ctl(segment_, k).word[w];
  std::atomic_ref<uint32_t> sleepers(c.sleepers);
  std::atomic_ref<uint64_t> value(c.value);
  for (;;) {
    const auto now = Clock::now();
    if (now >= dl.at) fail_late(w, target, op, dl);
    sleepers.fetch_add(1, std::memory_order_seq_cst);
    const uint64_t seen = value.load(std::memory_order_seq_cst);
    if (seen < target)
      futex_wait(&c.value, static_cast<uint32_t>(seen),
                 std::min<Clock::duration>(kSleepSlice, dl.at - now));
    sleepers.fetch_sub(1, std::memory_order_seq_cst);
    if (load(k, w) >= target) return;
    // The lock goes with the process: a peer that holds none is gone for good.
    if (!segment_.held_by_other(k) && load(k, w) < target)
      WEFT_DIST_ERROR("shm ", op, ": peer rank ", ranks_[k],
                      " exited (killed or crashed) while rank ", ranks_[me_], " waited for it");
  }
}

void ShmGroup::fail_late(Word w, uint64_t target, const char* op, const Deadline& dl) {
  std::string late;
  for (int k = 0; k < size(); ++k)
    if (k != me_ && load(k, w) < target)
      late += (late.empty() ? "" : ", ") + std::to_string(ranks_[k]);
  const bool several = late.find(',') != std::string::npos;
  WEFT_DIST_ERROR("shm ", op, ": timed out: rank", several ? "s " : " ", late, " ", word_name(w),
                  " within ", dl.timeout.count(),
                  " ms (a stalled or dead peer, or ranks that issued different collectives)");
}

void ShmGroup::set_desc(uint64_t step, uint64_t what, uint64_t bytes, uint64_t where) {
  desc(segment_, size(), me_, step) = Desc{what, bytes, where};
}

void ShmGroup::check_desc(int k, uint64_t step, uint64_t what, uint64_t bytes, const char* op,
                          uint64_t where) const {
  const Desc d = desc(segment_, size(), k, step);
  WEFT_CHECK_DIST(d.what == what && d.bytes == bytes, "shm ", op, ": rank ", ranks_[k], " issued ",
                  describe_str(d.what, d.bytes), " while rank ", ranks_[me_], " issued ",
                  describe_str(what, bytes), "; every rank must pass the same shapes and dtypes");
  WEFT_CHECK_DIST(d.where == where, "shm ", op, ": rank ", ranks_[k], " passed symmetric buffer ",
                  d.where >> 40, " at byte ", d.where & ((1ULL << 40) - 1), " while rank ",
                  ranks_[me_], " passed buffer ", where >> 40, " at byte ",
                  where & ((1ULL << 40) - 1),
                  "; every rank must pass the same view of the same symmetric tensor");
}

void ShmGroup::allreduce(void* data, size_t count, DType dtype, ReduceOp op, const Deadline& dl) {
  const size_t es = itemsize(dtype), per = chunk_ / es, total = count * es;
  const uint64_t what = describe(kAllreduce, dtype, op);
  auto* bytes = static_cast<uint8_t*>(data);
  for (size_t first = 0; first < count; first += per) {
    const size_t m = std::min(per, count - first);
    uint8_t* out = bytes + first * es;
    const uint64_t s = ++step_;
    // Our slot of this buffer is free once every rank is done with its previous use.
    if (s > kBuffers) wait_all(kDone, s - kBuffers, "allreduce", dl);
    std::memcpy(slot(me_, s), out, m * es);
    set_desc(s, what, total);
    publish(kArrived, s);
    wait_all(kArrived, s, "allreduce", dl);
    for (int k = 0; k < size(); ++k)
      if (k != me_) check_desc(k, s, what, total, "allreduce");
    if (size() <= 2 || m * es <= kDirectBytes) {
      // Every rank folds the whole chunk: one synchronisation, the same bits everywhere.
      for (int k = 0; k < size(); ++k) srcs_[k] = slot(k, s);
      fold(out, srcs_.data(), size(), m, dtype, op);
      if (op == ReduceOp::AVG) average(out, m, dtype, size());
    } else {
      reduce_scatter_gather(out, m, s, dtype, op, dl);
    }
    publish(kDone, s);
  }
}

// Rank k folds part k of the chunk into its own slot, then every rank gathers the parts: each
// byte is read about twice instead of once per rank.
void ShmGroup::reduce_scatter_gather(uint8_t* out, size_t m, uint64_t s, DType dtype, ReduceOp op,
                                     const Deadline& dl) {
  const size_t es = itemsize(dtype), n = static_cast<size_t>(size());
  const size_t align = kPartAlign / es;
  const size_t part = round_up((m + n - 1) / n, align);
  const auto lo = [&](size_t k) { return std::min(m, k * part); };
  const size_t a = lo(me_), z = lo(me_ + 1);
  if (z > a) {
    for (int k = 0; k < size(); ++k) srcs_[k] = slot(k, s) + a * es;
    uint8_t* mine = slot(me_, s) + a * es;
    fold(mine, srcs_.data(), size(), z - a, dtype, op);
    if (op == ReduceOp::AVG) average(mine, z - a, dtype, size());
  }
  publish(kReduced, s);
  wait_all(kReduced, s, "allreduce", dl);
  for (size_t k = 0; k < n; ++k)
    if (lo(k + 1) > lo(k))
      std::memcpy(out + lo(k) * es, slot(static_cast<int>(k), s) + lo(k) * es,
                  (lo(k + 1) - lo(k)) * es);
}

// Note [Symmetric buffers]: rank k folds part k of every rank's buffer into its own and writes
// the result into every other rank's, in pieces that stay in cache; two synchronisations, and no
// byte staged. After the second every buffer holds the whole result and nobody touches ours.
void ShmGroup::allreduce_symmetric(const SymmetricBuffer& buf, size_t offset, size_t count,
                                   DType dtype, ReduceOp op, const Deadline& dl, void* out_) {
  const size_t es = itemsize(dtype), n = static_cast<size_t>(size());
  const uint64_t what = describe(kSymmetricAllreduce, dtype, op), where = locate(buf.id(), offset);
  const uint64_t s = ++step_;
  // Our descriptor of this buffer is free once every rank is done with its previous use.
  if (s > kBuffers) wait_all(kDone, s - kBuffers, "allreduce", dl);
  set_desc(s, what, count * es, where);
  publish(kArrived, s);
  wait_all(kArrived, s, "allreduce", dl);
  for (int k = 0; k < size(); ++k)
    if (k != me_) check_desc(k, s, what, count * es, "allreduce", where);
  const size_t part = round_up((count + n - 1) / n, kPartAlign / es);
  const size_t a = std::min(count, static_cast<size_t>(me_) * part);
  const size_t z = std::min(count, static_cast<size_t>(me_ + 1) * part);
  const size_t piece = kDirectBytes / es;
  auto* out = static_cast<uint8_t*>(out_);
  for (size_t first = a; first < z; first += piece) {
    const size_t m = std::min(piece, z - first), at = offset + first * es;
    for (int k = 0; k < size(); ++k) srcs_[k] = buf.region(k) + at;
    uint8_t* result = out ? out + first * es : buf.region(me_) + at;
    fold(result, srcs_.data(), size(), m, dtype, op);
    if (op == ReduceOp::AVG) average(result, m, dtype, size());
    for (int k = 0; k < size(); ++k)
      if (k != me_) std::memcpy(buf.region(k) + at, result, m * es);
  }
  publish(kDone, s);
  wait_all(kDone, s, "allreduce", dl);
  if (!out) return;
  // Note [All-reduce into a separate output]: the other parts, which their ranks wrote into our
  // buffer before kDone; nobody writes it again before we arrive at a later op.
  const uint8_t* mine = buf.region(me_) + offset;
  if (a > 0) std::memcpy(out, mine, a * es);
  if (count > z) std::memcpy(out + z * es, mine + z * es, (count - z) * es);
}

// Note [Symmetric buffers]: local rank 0 creates the segment and passes its name in its slot;
// the others map it and report in theirs; rank 0 removes the name once all have reported, before
// anyone returns. One step of the pipeline, so it keeps its place among the group's ops.
std::optional<Segment> ShmGroup::share_segment(size_t bytes, const Deadline& dl) {
  constexpr size_t kName = 64;  // "/weft-<pid>-<16 hex>" and its terminator fit in a slot
  const uint64_t what = describe(kShare, kFloat32, ReduceOp::SUM), s = ++step_;
  if (s > kBuffers) wait_all(kDone, s - kBuffers, "empty_symmetric", dl);
  std::optional<Segment> seg;
  std::string why;
  char* mine = reinterpret_cast<char*>(slot(me_, s));
  std::memset(mine, 0, std::min(kName, chunk_));
  try {
    if (me_ == 0) {
      seg = Segment::create(bytes);
      WEFT_CHECK_DIST(seg->name().size() < std::min(kName, chunk_), "shared memory: name ",
                      seg->name(), " does not fit a ", chunk_, "-byte slot");
      std::memcpy(mine, seg->name().data(), seg->name().size());
    } else {
      wait_one(0, kArrived, s, "empty_symmetric", dl);
      check_desc(0, s, what, bytes, "empty_symmetric");
      const char* name = reinterpret_cast<const char*>(slot(0, s));
      const std::string n(name, strnlen(name, std::min(kName, chunk_)));
      if (n.empty()) why = "rank " + std::to_string(ranks_[0]) + " could not create it";
      if (!n.empty()) seg = Segment::open(n, bytes);
      mine[0] = 1;
    }
  } catch (const DistError& e) {
    seg.reset();
    why = e.what();
  }
  if (!seg) mine[0] = 0;
  set_desc(s, what, bytes);
  publish(kArrived, s);
  wait_all(kArrived, s, "empty_symmetric", dl);
  bool all = seg.has_value();
  for (int k = 0; k < size(); ++k)
    if (k != me_) {
      check_desc(k, s, what, bytes, "empty_symmetric");
      all = all && slot(k, s)[0] != 0;
    }
  if (me_ == 0 && seg) seg->unlink();
  publish(kDone, s);
  wait_all(kDone, s, "empty_symmetric", dl);
  if (!all && !why.empty())
    std::fprintf(
        stderr,
        "[weft] rank %d: no %zu-byte shared segment; the symmetric tensor is an ordinary one: %s\n",
        ranks_[me_], bytes, why.c_str());
  if (!all) return std::nullopt;
  return seg;
}

void ShmGroup::broadcast(void* data, size_t count, DType dtype, const Deadline& dl, int root) {
  const size_t es = itemsize(dtype), per = chunk_ / es, total = count * es;
  const uint64_t what = describe(kBroadcast, dtype, ReduceOp::SUM);
  auto* bytes = static_cast<uint8_t*>(data);
  for (size_t first = 0; first < count; first += per) {
    const size_t m = std::min(per, count - first);
    const uint64_t s = ++step_;
    if (me_ == root) {
      if (s > kBuffers) wait_all(kDone, s - kBuffers, "broadcast", dl);
      std::memcpy(slot(root, s), bytes + first * es, m * es);
      set_desc(s, what, total);
      publish(kArrived, s);
    } else {
      wait_one(root, kArrived, s, "broadcast", dl);
      check_desc(root, s, what, total, "broadcast");
      std::memcpy(bytes + first * es, slot(root, s), m * es);
    }
    publish(kDone, s);
  }
}

// Each step stages one piece of every part (`per` elements each, on their own cache lines); rank
// k folds piece k of every rank's slot. Its own piece it reads from `in`, not staged.
void ShmGroup::reduce_scatter(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                              const Deadline& dl) {
  const size_t es = itemsize(dtype), n = static_cast<size_t>(size());
  size_t per = chunk_ / n / kPartAlign * kPartAlign / es;
  if (per == 0) per = chunk_ / n / es;
  WEFT_CHECK_DIST(per > 0, "shm reduce_scatter: ", chunk_, "-byte chunks cannot hold a ",
                  dtype_name(dtype), " element for each of ", n, " ranks");
  const uint64_t what = describe(kReduceScatter, dtype, op);
  const auto* src = static_cast<const uint8_t*>(in);
  auto* dst = static_cast<uint8_t*>(out);
  for (size_t first = 0; first < count; first += per) {
    const size_t m = std::min(per, count - first);
    const uint64_t s = ++step_;
    if (s > kBuffers) wait_all(kDone, s - kBuffers, "reduce_scatter", dl);
    for (size_t k = 0; k < n; ++k)
      if (k != static_cast<size_t>(me_))
        std::memcpy(slot(me_, s) + k * per * es, src + (k * count + first) * es, m * es);
    set_desc(s, what, n * count * es);
    publish(kArrived, s);
    wait_all(kArrived, s, "reduce_scatter", dl);
    for (int k = 0; k < size(); ++k) {
      if (k != me_) check_desc(k, s, what, n * count * es, "reduce_scatter");
      srcs_[k] = k == me_ ? src + (me_ * count + first) * es : slot(k, s) + me_ * per * es;
    }
    fold(dst + first * es, srcs_.data(), size(), m, dtype, op);
    if (op == ReduceOp::AVG) average(dst + first * es, m, dtype, size());
    publish(kDone, s);
  }
}

void ShmGroup::allgather(const void* in, void* out, size_t count, DType dtype, const Deadline& dl) {
  const size_t es = itemsize(dtype), per = chunk_ / es;
  const uint64_t what = describe(kAllgather, dtype, ReduceOp::SUM);
  const auto* src = static_cast<const uint8_t*>(in);
  auto* dst = static_cast<uint8_t*>(out);
  for (size_t first = 0; first < count; first += per) {
    const size_t m = std::min(per, count - first);
    const uint64_t s = ++step_;
    if (s > kBuffers) wait_all(kDone, s - kBuffers, "allgather", dl);
    std::memcpy(slot(me_, s), src + first * es, m * es);
    set_desc(s, what, count * es);
    publish(kArrived, s);
    wait_all(kArrived, s, "allgather", dl);
    for (int k = 0; k < size(); ++k) {
      if (k != me_) check_desc(k, s, what, count * es, "allgather");
      std::memcpy(dst + (k * count + first) * es, slot(k, s), m * es);
    }
    publish(kDone, s);
  }
}

}  // namespace weft::dist::shm
