// Internal to TCPStore: its server, one thread polling non-blocking sockets; only that thread
// touches the key-value map, so it needs no lock. Waiting requests (GET of a missing key, WAIT)
// are parked until their keys appear or their deadline passes, and a connection's later bytes
// stay unread meanwhile, which keeps replies in request order. Malformed input closes that
// connection (logged) and leaves the store untouched. Admission (run id, token) and the limits
// on connections and bytes follow Note [Store admission]; log lines about one kind of trouble
// come at most once per interval, so no client can make the server spin or flood the log.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "weft/distributed/store_protocol.h"
#include "weft/distributed/tcp_store.h"

namespace weft::dist::detail {

class TCPStoreServer {
 public:
  // Listens on host:port (port 0: a free one, see port()), or adopts options.listen_fd; throws
  // DistError if it cannot.
  TCPStoreServer(const std::string& host, uint16_t port, const TCPStoreOptions& options);
  ~TCPStoreServer();
  TCPStoreServer(const TCPStoreServer&) = delete;
  TCPStoreServer& operator=(const TCPStoreServer&) = delete;

  uint16_t port() const { return port_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Conn {
    int fd = -1;
    std::string peer;
    std::vector<uint8_t> in;
    std::vector<uint8_t> out;
    size_t out_pos = 0;
    bool parked = false;
    bool dead = false;
    bool admitted = false;     // presented the token (or none is needed)
    bool close_after = false;  // refused: close once the error reply is out
    std::string refuse;        // non-empty: answer the first request with this error
    bool pending_out() const { return out_pos < out.size(); }
  };
  struct Waiter {
    uint64_t conn;
    proto::Message req;
    Clock::time_point deadline;
  };

  void listen_on(const std::string& host, uint16_t port);
  void adopt(int fd, uint16_t port);
  void log(const std::string& msg);
  void log_limited(int kind, const std::string& msg);
  int poll_timeout_ms() const;
  void run();
  void loop();
  void accept_all();
  void drop(uint64_t id, const std::string& reason);
  void read_some(uint64_t id);
  void flush(uint64_t id);
  void reply(uint64_t id, const proto::Message& m);
  void process(uint64_t id);
  void run_dirty();
  bool has(const std::string& k) const { return kv_.count(k) != 0; }
  bool admit(uint64_t id, const proto::Message& m);
  void refuse(uint64_t id, const std::string& why);
  bool fits(const std::string& key, size_t value_size, proto::Message* error) const;
  void put(const std::string& key, std::vector<uint8_t> value);
  void handle(uint64_t id, proto::Message m);
  proto::Message add(const proto::Message& m);
  proto::Message compare_set(const proto::Message& m, bool* changed);
  void answer_wait(uint64_t id, const proto::Message& req);
  void unpark(uint64_t id);
  void wake_waiters();
  void expire_waiters();

  std::string host_;
  uint16_t port_ = 0;
  TCPStoreOptions options_;
  size_t bytes_held_ = 0;  // keys and values in kv_
  size_t refused_ = 0;     // connections waiting to be told they are refused
  Clock::time_point accept_paused_until_{};
  enum LogKind { kAcceptLog = 0, kRefuseLog = 1, kFullLog = 2, kLogKinds = 3 };
  Clock::time_point next_log_[kLogKinds]{};
  int suppressed_[kLogKinds]{};
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::map<uint64_t, Conn> conns_;
  uint64_t next_id_ = 1;
  std::list<Waiter> waiters_;
  std::vector<uint64_t> dirty_;
  std::unordered_map<std::string, std::vector<uint8_t>> kv_;
};

}  // namespace weft::dist::detail
