// Key-value stores for rendezvous (torch.distributed's Store): ranks publish and wait for
// small values (addresses, communicator ids) by key. Every blocking call takes a timeout
// and throws weft::DistError naming the keys it waited for, never hangs.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "weft/error.h"

namespace weft::dist {

// Errors from communication (weft/error.h): caught as dist::DistError, as PyTorch users write
// torch.distributed.DistError.
using weft::DistError;

using Duration = std::chrono::milliseconds;
inline constexpr Duration kDefaultTimeout = std::chrono::minutes(30);

class Store {
 public:
  explicit Store(Duration timeout = kDefaultTimeout) : timeout_(timeout) {}
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<uint8_t>& value) = 0;
  // Blocks until the key exists (or the store's timeout passes).
  virtual std::vector<uint8_t> get(const std::string& key) = 0;
  // Atomically adds `delta` to the integer stored at key (0 if absent); returns the result.
  virtual int64_t add(const std::string& key, int64_t delta) = 0;
  // Sets key to `desired` if its current value equals `expected` (or it is absent and
  // expected is empty); returns the value after the operation.
  virtual std::vector<uint8_t> compare_set(const std::string& key,
                                           const std::vector<uint8_t>& expected,
                                           const std::vector<uint8_t>& desired) = 0;
  virtual bool check(const std::vector<std::string>& keys) = 0;  // all exist, no waiting
  virtual bool delete_key(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys, Duration timeout) = 0;
  void wait(const std::vector<std::string>& keys) { wait(keys, timeout_); }
  virtual int64_t num_keys() = 0;

  void set(const std::string& key, const std::string& value) {
    set(key, std::vector<uint8_t>(value.begin(), value.end()));
  }
  std::string get_string(const std::string& key) {
    auto v = get(key);
    return std::string(v.begin(), v.end());
  }
  Duration timeout() const { return timeout_; }
  void set_timeout(Duration t) { timeout_ = t; }

 protected:
  Duration timeout_;
};

// Prefixes every key, so several process groups can share one store.
class PrefixStore : public Store {
 public:
  PrefixStore(std::string prefix, std::shared_ptr<Store> store)
      : Store(store->timeout()), prefix_(std::move(prefix)), store_(std::move(store)) {}
  void set(const std::string& key, const std::vector<uint8_t>& value) override {
    store_->set(k(key), value);
  }
  std::vector<uint8_t> get(const std::string& key) override { return store_->get(k(key)); }
  int64_t add(const std::string& key, int64_t delta) override { return store_->add(k(key), delta); }
  std::vector<uint8_t> compare_set(const std::string& key, const std::vector<uint8_t>& expected,
                                   const std::vector<uint8_t>& desired) override {
    return store_->compare_set(k(key), expected, desired);
  }
  bool check(const std::vector<std::string>& keys) override { return store_->check(ks(keys)); }
  bool delete_key(const std::string& key) override { return store_->delete_key(k(key)); }
  void wait(const std::vector<std::string>& keys, Duration timeout) override {
    store_->wait(ks(keys), timeout);
  }
  int64_t num_keys() override { return store_->num_keys(); }
  const std::shared_ptr<Store>& underlying() const { return store_; }
  using Store::set;
  using Store::wait;

 private:
  std::string k(const std::string& key) const { return prefix_ + "/" + key; }
  std::vector<std::string> ks(const std::vector<std::string>& keys) const {
    std::vector<std::string> out;
    for (auto& key : keys) out.push_back(k(key));
    return out;
  }
  std::string prefix_;
  std::shared_ptr<Store> store_;
};

}  // namespace weft::dist
