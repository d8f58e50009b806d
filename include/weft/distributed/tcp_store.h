// TCPStore: torch.distributed's TCP rendezvous store. One instance (rank 0, or a dedicated
// process) runs the server on a background thread; every instance, the server's included, is a
// client. Guarantees: the server listens only on the given address, validates every message
// (malformed input closes that connection, logged; the store is untouched), and every client call
// returns or throws DistError naming host:port (and the keys) within the store timeout (at least
// 10 s for a reply, so that a busy machine is not taken for a stalled server).
// TCPStoreOptions admit only the job's own clients and bound what the server holds; see
// Note [Store admission] in docs/ARCHITECTURE.md.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "weft/distributed/store.h"
#include "weft/distributed/store_protocol.h"

namespace weft::dist {

namespace detail {
class TCPStoreServer;
}

// What init_process_group fills from weft-run's environment (WEFT_RUN_ID, WEFT_STORE_TOKEN,
// WEFT_STORE_LISTEN_FD); plain TCPStore users may leave all of it at its default.
struct TCPStoreOptions {
  // Client: the job this instance belongs to; a server whose run id differs refuses it, naming
  // both ("port 29500 is used by another job"). Server: its job's run id. Empty: not checked.
  std::string run_id;
  // Server: when non-empty every connection must first present this token, or it is refused
  // before it can read or write a key. Client: the token to present.
  std::string token;
  // Server: adopt this listening socket (its port must be `port`) instead of binding one, so
  // that a launcher which bound the port first hands it over without a window for another job.
  int listen_fd = -1;
  // Who is waiting, for the progress lines printed while the server is unreachable ("rank 1").
  std::string label = "TCPStore client";
  // Server limits: connections beyond max_connections and writes that would hold more than
  // max_bytes of keys and values get an error reply; the store and other clients are unaffected.
  size_t max_connections = 1024;
  size_t max_bytes = size_t{1} << 30;
};

class TCPStore : public Store {
 public:
  // port 0 with is_server picks a free port (see port()). world_size > 0 with wait_for_workers
  // makes every instance register and the server's constructor wait until world_size instances
  // (itself included) have joined, as PyTorch does; world_size -1 means unknown: no waiting.
  TCPStore(std::string host, uint16_t port, int world_size = -1, bool is_server = false,
           Duration timeout = kDefaultTimeout, bool wait_for_workers = true,
           TCPStoreOptions options = {});
  ~TCPStore() override;
  TCPStore(const TCPStore&) = delete;
  TCPStore& operator=(const TCPStore&) = delete;

  void set(const std::string& key, const std::vector<uint8_t>& value) override;
  std::vector<uint8_t> get(const std::string& key) override;
  // Values are decimal strings, as in PyTorch: get() after add() returns e.g. "42".
  int64_t add(const std::string& key, int64_t delta) override;
  // As PyTorch: if the key is absent and `expected` is non-empty nothing is set and `expected`
  // is returned; compare the result with `desired` to learn whether the swap happened.
  std::vector<uint8_t> compare_set(const std::string& key, const std::vector<uint8_t>& expected,
                                   const std::vector<uint8_t>& desired) override;
  bool check(const std::vector<std::string>& keys) override;
  bool delete_key(const std::string& key) override;
  void wait(const std::vector<std::string>& keys, Duration timeout) override;
  // Counts user keys; the store's own bookkeeping keys (worker registration) are left out.
  int64_t num_keys() override;
  using Store::set;
  using Store::wait;

  const std::string& host() const { return host_; }
  uint16_t port() const { return port_; }
  bool is_server() const { return server_ != nullptr; }

 private:
  proto::Message request(const proto::Message& req, Duration reply_within);
  void connect_client();
  void hello();
  void wait_for_workers(int world_size);
  std::string name() const;
  Duration reply_within() const;  // how long a request that does not wait for keys may take  // "TCPStore host:port", which starts its error messages

  std::string host_;
  uint16_t port_;
  TCPStoreOptions options_;
  std::unique_ptr<detail::TCPStoreServer> server_;
  std::mutex mu_;  // one request in flight per connection
  int fd_ = -1;
};

}  // namespace weft::dist
