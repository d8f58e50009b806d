#include "distributed/shm/segment.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <random>

#include "distributed/store_util.h"
#include "weft/error.h"

namespace weft::dist::shm {

namespace {

std::string fresh_name() {
  std::random_device rd;
  const uint64_t r = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  char buf[64];
  std::snprintf(buf, sizeof buf, "/weft-%d-%016llx", static_cast<int>(getpid()),
                static_cast<unsigned long long>(r));
  return buf;
}

void* map(int fd, size_t bytes, const std::string& name) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  WEFT_CHECK_DIST(p != MAP_FAILED, "shared memory: mmap of ", name, " (", bytes,
                  " bytes) failed: ", detail::errno_str(errno));
  return p;
}

flock byte(int slot, short type) {
  flock l{};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = slot;
  l.l_len = 1;
  return l;
}

// A creator killed between shm_open and its unlink (a window inside the group's constructor)
// leaves its name behind. Such a segment is old and nobody holds a lock on it: a live creator
// locks its byte right after creating it and keeps the lock until it exits. Those are removed.
constexpr time_t kStaleAfterSeconds = 60;

void remove_stale_segments() {
  DIR* dir = opendir("/dev/shm");
  if (!dir) return;
  const time_t now = time(nullptr);
  while (dirent* e = readdir(dir)) {
    const std::string name = std::string("/") + e->d_name;
    if (name.rfind("/weft-", 0) != 0) continue;
    const int fd = shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) continue;
    struct stat st {};
    flock l{};
    l.l_type = F_WRLCK;
    l.l_whence = SEEK_SET;  // l_start 0, l_len 0: the whole file
    if (fstat(fd, &st) == 0 && st.st_mtime + kStaleAfterSeconds < now &&
        fcntl(fd, F_OFD_GETLK, &l) == 0 && l.l_type == F_UNLCK)
      shm_unlink(name.c_str());
    close(fd);
  }
  closedir(dir);
}

}  // namespace

Segment Segment::create(size_t bytes) {
  remove_stale_segments();
  Segment s;
  s.name_ = fresh_name();
  s.fd_ = shm_open(s.name_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  WEFT_CHECK_DIST(s.fd_ >= 0, "shared memory: shm_open(", s.name_,
                  ", O_CREAT) failed: ", detail::errno_str(errno));
  s.owns_name_ = true;  // from here on the destructor removes it
  s.hold(0);            // at once: an unlocked old segment is a stale one (see above)
  s.bytes_ = bytes;
  const int rc = posix_fallocate(s.fd_, 0, static_cast<off_t>(bytes));
  WEFT_CHECK_DIST(rc == 0, "shared memory: reserving ", bytes, " bytes for ", s.name_,
                  " failed (is /dev/shm full or small?): ", detail::errno_str(rc));
  s.data_ = map(s.fd_, bytes, s.name_);
  return s;
}

Segment Segment::open(const std::string& name, size_t bytes) {
  Segment s;
  s.name_ = name;
  s.fd_ = shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0600);
  WEFT_CHECK_DIST(s.fd_ >= 0, "shared memory: shm_open(", name,
                  ") failed: ", detail::errno_str(errno),
                  " (a host whose /dev/shm the other ranks do not share?)");
  struct stat st {};
  WEFT_CHECK_DIST(fstat(s.fd_, &st) == 0 && static_cast<size_t>(st.st_size) == bytes,
                  "shared memory: ", name, " has ", st.st_size, " bytes, expected ", bytes);
  s.bytes_ = bytes;
  s.data_ = map(s.fd_, bytes, name);
  return s;
}

Segment& Segment::operator=(Segment&& o) noexcept {
  if (this != &o) {
    release();
    fd_ = o.fd_;
    data_ = o.data_;
    bytes_ = o.bytes_;
    name_ = std::move(o.name_);
    owns_name_ = o.owns_name_;
    o.fd_ = -1;
    o.data_ = nullptr;
    o.bytes_ = 0;
    o.owns_name_ = false;
  }
  return *this;
}

Segment::~Segment() { release(); }

void Segment::release() {
  if (data_) munmap(data_, bytes_);
  data_ = nullptr;
  unlink();
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

void Segment::unlink() {
  if (owns_name_) shm_unlink(name_.c_str());
  owns_name_ = false;
}

void Segment::hold(int slot) {
  flock l = byte(slot, F_WRLCK);
  WEFT_CHECK_DIST(fcntl(fd_, F_OFD_SETLK, &l) == 0, "shared memory: locking slot ", slot, " of ",
                  name_, " failed: ", detail::errno_str(errno));
}

bool Segment::held_by_other(int slot) const {
  flock l = byte(slot, F_WRLCK);
  if (fcntl(fd_, F_OFD_GETLK, &l) != 0) return true;  // cannot tell: assume alive
  return l.l_type != F_UNLCK;
}

}  // namespace weft::dist::shm
