// FileStore: the file:// rendezvous store, as PyTorch's. Every operation is a record appended to
// one shared file under flock(2); readers replay the records they have not seen yet. Works for
// processes on one host or on a shared file system with working flock. Waits poll the file with
// a short sleep and throw DistError naming the missing keys and the file after the timeout.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "weft/distributed/store.h"

namespace weft::dist {

class FileStore : public Store {
 public:
  // world_size > 0: the last of world_size instances to be destroyed removes the file, so the
  // next job starts from an empty store. -1: the file is left in place.
  FileStore(std::string path, int world_size = -1, Duration timeout = kDefaultTimeout);
  ~FileStore() override;
  FileStore(const FileStore&) = delete;
  FileStore& operator=(const FileStore&) = delete;

  void set(const std::string& key, const std::vector<uint8_t>& value) override;
  std::vector<uint8_t> get(const std::string& key) override;
  // Values are decimal strings, as in PyTorch.
  int64_t add(const std::string& key, int64_t delta) override;
  // Same semantics as TCPStore::compare_set (PyTorch's).
  std::vector<uint8_t> compare_set(const std::string& key, const std::vector<uint8_t>& expected,
                                   const std::vector<uint8_t>& desired) override;
  bool check(const std::vector<std::string>& keys) override;
  bool delete_key(const std::string& key) override;
  void wait(const std::vector<std::string>& keys, Duration timeout) override;
  int64_t num_keys() override;  // user keys only
  using Store::set;
  using Store::wait;

  const std::string& path() const { return path_; }

 private:
  class Locked;  // an open, flock'ed handle on the file, caught up with its records
  int64_t add_locked(Locked& f, const std::string& key, int64_t delta);

  std::string path_;
  int world_size_;
  std::mutex mu_;  // guards the cache below
  std::map<std::string, std::vector<uint8_t>> cache_;
  uint64_t pos_ = 0;  // bytes of the file replayed into cache_
  uint64_t ino_ = 0;  // the file those bytes came from (a removed and recreated file restarts)
};

}  // namespace weft::dist
