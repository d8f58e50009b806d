#include "weft/distributed/file_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <thread>

#include "distributed/store_util.h"

namespace weft::dist {

namespace {

using Clock = std::chrono::steady_clock;
using detail::errno_str;

constexpr const char* kFinishedKey = "__weft_store__/finished";
constexpr char kSetRecord = 'S';
constexpr char kDeleteRecord = 'D';
constexpr auto kPollInterval = std::chrono::milliseconds(5);

void put_u32(std::vector<uint8_t>& out, size_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

std::vector<uint8_t> record(char op, const std::string& key, const std::vector<uint8_t>* value) {
  std::vector<uint8_t> r;
  r.push_back(static_cast<uint8_t>(op));
  put_u32(r, key.size());
  r.insert(r.end(), key.begin(), key.end());
  if (value) {
    put_u32(r, value->size());
    r.insert(r.end(), value->begin(), value->end());
  }
  return r;
}

}  // namespace

// Opens the file, takes flock (shared for reads, exclusive for writes) and replays the records
// appended since this store last looked. The store's mutex must be held.
class FileStore::Locked {
 public:
  Locked(FileStore& s, bool exclusive) : s_(s) {
    fd_ = ::open(s.path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) WEFT_DIST_ERROR("FileStore '", s.path_, "': cannot open: ", errno_str(errno));
    try {
      while (::flock(fd_, exclusive ? LOCK_EX : LOCK_SH) != 0) {
        if (errno != EINTR)
          WEFT_DIST_ERROR("FileStore '", s.path_, "': flock failed: ", errno_str(errno));
      }
      catch_up();
    } catch (...) {
      ::close(fd_);  // the destructor does not run for a throwing constructor
      throw;
    }
  }
  ~Locked() { ::close(fd_); }  // closing drops the flock
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;

  void append(char op, const std::string& key, const std::vector<uint8_t>* value) {
    const auto r = record(op, key, value);
    // The file is appended at its end, which is where catch_up() stopped (we hold the lock).
    size_t done = 0;
    while (done < r.size()) {
      const ssize_t n =
          ::pwrite(fd_, r.data() + done, r.size() - done, static_cast<off_t>(s_.pos_ + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) WEFT_DIST_ERROR("FileStore '", s_.path_, "': write failed: ", errno_str(errno));
      done += static_cast<size_t>(n);
    }
    s_.pos_ += r.size();
    if (op == kSetRecord)
      s_.cache_[key] = *value;
    else
      s_.cache_.erase(key);
  }

 private:
  void catch_up() {
    struct stat st {};
    if (::fstat(fd_, &st) != 0)
      WEFT_DIST_ERROR("FileStore '", s_.path_, "': fstat failed: ", errno_str(errno));
    const auto size = static_cast<uint64_t>(st.st_size);
    if (st.st_ino != s_.ino_ || size < s_.pos_) {
      // A different (removed and recreated) or truncated file: replay it from the start.
      s_.cache_.clear();
      s_.pos_ = 0;
      s_.ino_ = st.st_ino;
    }
    if (size == s_.pos_) return;
    std::vector<uint8_t> buf(size - s_.pos_);
    size_t got = 0;
    while (got < buf.size()) {
      const ssize_t n =
          ::pread(fd_, buf.data() + got, buf.size() - got, static_cast<off_t>(s_.pos_ + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        WEFT_DIST_ERROR("FileStore '", s_.path_,
                        "': read failed: ", n == 0 ? std::string("short read") : errno_str(errno));
      got += static_cast<size_t>(n);
    }
    size_t p = 0;
    auto u32 = [&](uint32_t* v) {
      if (buf.size() - p < 4) return false;
      *v = uint32_t{buf[p]} | uint32_t{buf[p + 1]} << 8 | uint32_t{buf[p + 2]} << 16 |
           uint32_t{buf[p + 3]} << 24;
      p += 4;
      return true;
    };
    while (p < buf.size()) {
      const size_t start = p;
      auto corrupt = [&](const char* what) {
        WEFT_DIST_ERROR("FileStore '", s_.path_, "': corrupt record at offset ", s_.pos_ + start,
                        ": ", what);
      };
      const char op = static_cast<char>(buf[p++]);
      if (op != kSetRecord && op != kDeleteRecord) corrupt("unknown record type");
      uint32_t klen = 0;
      if (!u32(&klen) || klen > buf.size() - p) corrupt("truncated key");
      std::string key(reinterpret_cast<const char*>(buf.data() + p), klen);
      p += klen;
      if (op == kSetRecord) {
        uint32_t vlen = 0;
        if (!u32(&vlen) || vlen > buf.size() - p) corrupt("truncated value");
        s_.cache_[key].assign(buf.begin() + static_cast<std::ptrdiff_t>(p),
                              buf.begin() + static_cast<std::ptrdiff_t>(p + vlen));
        p += vlen;
      } else {
        s_.cache_.erase(key);
      }
    }
    s_.pos_ = size;
  }

  FileStore& s_;
  int fd_ = -1;
};

FileStore::FileStore(std::string path, int world_size, Duration timeout)
    : Store(timeout), path_(std::move(path)), world_size_(world_size) {
  std::lock_guard<std::mutex> lock(mu_);
  Locked f(*this, false);  // fails early, naming the path, if the file cannot be created
}

FileStore::~FileStore() {
  if (world_size_ <= 0) return;
  try {
    std::lock_guard<std::mutex> lock(mu_);
    Locked f(*this, true);
    if (add_locked(f, kFinishedKey, 1) >= world_size_) ::unlink(path_.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[weft] FileStore '%s': cleanup failed: %s\n", path_.c_str(), e.what());
  }
}

void FileStore::set(const std::string& key, const std::vector<uint8_t>& value) {
  std::lock_guard<std::mutex> lock(mu_);
  Locked f(*this, true);
  f.append(kSetRecord, key, &value);
}

std::vector<uint8_t> FileStore::get(const std::string& key) {
  wait({key}, timeout_);
  std::lock_guard<std::mutex> lock(mu_);
  Locked f(*this, false);
  auto it = cache_.find(key);
  // Deleted between the wait and now: report it rather than return a bogus value.
  WEFT_CHECK_DIST(it != cache_.end(), "FileStore '", path_, "': key '", key,
                  "' was deleted while being read");
  return it->second;
}

int64_t FileStore::add_locked(Locked& f, const std::string& key, int64_t delta) {
  int64_t cur = 0;
  auto it = cache_.find(key);
  WEFT_CHECK_DIST(it == cache_.end() || detail::parse_int(it->second, &cur), "FileStore '", path_,
                  "': add: value of key '", key, "' is not an integer");
  int64_t result = 0;
  const bool overflow = __builtin_add_overflow(cur, delta, &result);
  WEFT_CHECK_DIST(!overflow, "FileStore '", path_, "': add: key '", key, "' overflows");
  const std::vector<uint8_t> v = detail::int_bytes(result);
  f.append(kSetRecord, key, &v);
  return result;
}

int64_t FileStore::add(const std::string& key, int64_t delta) {
  std::lock_guard<std::mutex> lock(mu_);
  Locked f(*this, true);
  return add_locked(f, key, delta);
}

std::vector<uint8_t> FileStore::compare_set(const std::string& key,
                                            const std::vector<uint8_t>& expected,
                                            const std::vector<uint8_t>& desired) {
  std::lock_guard<std::mutex> lock(mu_);
  Locked f(*this, true);
  auto it = cache_.find(key);
  if (it == cache_.end()) {
    if (!expected.empty()) return expected;
  } else if (it->second != expected) {
    return it->second;
  }
  f.append(kSetRecord, key, &desired);
  return desired;
}

bool FileStore::check(const std::vector<std::string>& keys) {
  std::lock_guard<std::mutex> lock(mu_);
  Locked f(*this, false);
  return std::all_of(keys.begin(), keys.end(), [&](auto& k) { return cache_.count(k) != 0; });
}

bool FileStore::delete_key(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  Locked f(*this, true);
  if (!cache_.count(key)) return false;
  f.append(kDeleteRecord, key, nullptr);
  return true;
}

void FileStore::wait(const std::vector<std::string>& keys, Duration timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    std::vector<std::string> missing;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Locked f(*this, false);
      for (auto& k : keys)
        if (!cache_.count(k)) missing.push_back(k);
    }
    if (missing.empty()) return;
    const auto now = Clock::now();
    WEFT_CHECK_DIST(now < deadline, "FileStore '", path_, "': wait for keys ",
                    detail::describe_keys(keys), " timed out after ", timeout.count(),
                    " ms; missing ", detail::describe_keys(missing));
    std::this_thread::sleep_for(std::min<Clock::duration>(kPollInterval, deadline - now));
  }
}

int64_t FileStore::num_keys() {
  std::lock_guard<std::mutex> lock(mu_);
  Locked f(*this, false);
  return detail::count_user_keys(cache_);
}

}  // namespace weft::dist
