// Internal: one POSIX shared-memory segment that the ranks of a host map
// (Note [Shared-memory all-reduce] in docs/ARCHITECTURE.md). The leader creates it under a random
// name and unlinks the name once all have mapped it, so the memory goes with the last process,
// however it ends. Each rank holds an OFD lock on one byte of it while it lives: the lock tells
// its peers, cheaply and across PID namespaces, whether its process is gone.
#pragma once

#include <cstddef>
#include <string>

namespace weft::dist::shm {

class Segment {
 public:
  // Creates "/weft-<pid>-<random>" of `bytes` (zero-filled, its pages reserved up front so that a
  // full /dev/shm fails here rather than with SIGBUS later) and locks byte 0. Throws DistError
  // naming the call and errno's text. First removes the stale segments of creators killed before
  // they unlinked theirs: weft segments unmodified for a minute that nobody holds a lock on.
  static Segment create(size_t bytes);
  // Maps an existing segment; `bytes` must be its size. Throws DistError as create does.
  static Segment open(const std::string& name, size_t bytes);

  Segment() = default;
  Segment(Segment&& o) noexcept { *this = std::move(o); }
  Segment& operator=(Segment&& o) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();  // unmaps, closes, and unlinks the name if this rank created it and still holds it

  void* data() const { return data_; }
  size_t size() const { return bytes_; }
  const std::string& name() const { return name_; }
  // Removes the name (the creator calls it once every rank has mapped the segment).
  void unlink();

  // Locks byte `slot` of the file for this process's lifetime (the lock goes when the process
  // does, even on SIGKILL). Throws DistError if another process holds it.
  void hold(int slot);
  // Whether some other live process holds byte `slot` (see hold).
  bool held_by_other(int slot) const;

 private:
  void release();

  int fd_ = -1;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  std::string name_;
  bool owns_name_ = false;
};

}  // namespace weft::dist::shm
