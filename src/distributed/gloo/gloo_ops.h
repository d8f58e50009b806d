// Internal to ProcessGroupGloo: what its group and its intra-host path (intra_host.h) share of
// Gloo. GlooStore lets Gloo's rendezvous use a weft Store (every wait bounded, errors naming the
// keys); gloo_allreduce reduces one tensor over a Gloo context with the arithmetic the group
// promises (fp16/bf16 combined in float and rounded back; AVG = SUM, then divided by the size).
#pragma once

#include <gloo/context.h>
#include <gloo/rendezvous/store.h>

#include <memory>

#include "weft/distributed/process_group.h"
#include "weft/distributed/store.h"

namespace weft::dist::detail {

// Gloo's rendezvous reads and writes through this: our Store (TCPStore, FileStore, PrefixStore),
// whose every blocking call has a timeout and throws DistError naming the keys.
class GlooStore : public gloo::rendezvous::Store {
 public:
  explicit GlooStore(std::shared_ptr<dist::Store> s) : s_(std::move(s)) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    s_->set(key, std::vector<uint8_t>(data.begin(), data.end()));
  }
  std::vector<char> get(const std::string& key) override {
    auto v = s_->get(key);
    return std::vector<char>(v.begin(), v.end());
  }
  void wait(const std::vector<std::string>& keys) override { s_->wait(keys); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& t) override {
    s_->wait(keys, t);
  }

 private:
  std::shared_ptr<dist::Store> s_;
};

// In place over ctx's ranks; `tag` keeps concurrent ops apart, `timeout` bounds it.
void gloo_allreduce(const std::shared_ptr<gloo::Context>& ctx, const Tensor& t, ReduceOp op,
                    uint32_t tag, Duration timeout);

}  // namespace weft::dist::detail
