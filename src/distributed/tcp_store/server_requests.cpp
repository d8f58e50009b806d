// The key-value side of TCPStore's server (server.h): admission of each connection (see
// Note [Store admission]), the requests themselves within the byte limit, and parked waiters.
#include <algorithm>

#include "distributed/store_util.h"
#include "distributed/tcp_store/net.h"
#include "distributed/tcp_store/server.h"

namespace weft::dist::detail {

using proto::Message;
using proto::MsgType;

namespace {

// Compares without an early exit, so timing does not reveal how much of a token was right.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

// Note [Store admission]: a connection over the limit is refused at its first request; a HELLO
// from another job (another run id) or without the job's token is refused; without a token
// configured, a connection needs no HELLO. Returns whether the request may be served.
bool TCPStoreServer::admit(uint64_t id, const Message& m) {
  Conn& c = conns_.at(id);
  if (!c.refuse.empty()) {
    refuse(id, c.refuse);
    return false;
  }
  if (m.type != MsgType::kHello) {
    if (!c.admitted)
      refuse(id,
             "refused: this store admits only its job's clients, which first present the "
             "job's token (WEFT_STORE_TOKEN)");
    return c.admitted;
  }
  const std::string& run_id = m.keys[0];
  if (!options_.run_id.empty() && !run_id.empty() && run_id != options_.run_id) {
    refuse(id, "port " + std::to_string(port_) + " is used by another job (run id " +
                   options_.run_id + "; the connecting process belongs to run id " + run_id + ")");
    return false;
  }
  if (!options_.token.empty() && !same_secret(m.keys[1], options_.token)) {
    refuse(id, "refused: wrong or missing job token (WEFT_STORE_TOKEN)");
    return false;
  }
  c.admitted = true;
  Message ok;
  ok.type = MsgType::kOk;
  reply(id, ok);
  return true;
}

void TCPStoreServer::refuse(uint64_t id, const std::string& why) {
  Conn& c = conns_.at(id);
  log_limited(kRefuseLog, "connection from " + c.peer + " " + why);
  Message err;
  err.type = MsgType::kError;
  err.text = why;
  c.close_after = true;
  reply(id, err);
}

// Whether setting key to a value of value_size bytes keeps the store within max_bytes; if not,
// *error is the reply that says so (nothing is stored).
bool TCPStoreServer::fits(const std::string& key, size_t value_size, Message* error) const {
  auto it = kv_.find(key);
  const size_t old = it == kv_.end() ? 0 : key.size() + it->second.size();
  const size_t after = bytes_held_ - old + key.size() + value_size;
  if (after <= options_.max_bytes || after <= bytes_held_) return true;
  error->type = MsgType::kError;
  error->text = "store is full: it holds " + std::to_string(bytes_held_) + " bytes of at most " +
                std::to_string(options_.max_bytes) + "; refusing " + std::to_string(value_size) +
                " bytes for key '" + key + "'";
  return false;
}

void TCPStoreServer::put(const std::string& key, std::vector<uint8_t> value) {
  auto [it, fresh] = kv_.try_emplace(key);
  bytes_held_ -= fresh ? 0 : key.size() + it->second.size();
  it->second = std::move(value);
  bytes_held_ += key.size() + it->second.size();
}

void TCPStoreServer::handle(uint64_t id, Message m) {
  Message out;
  switch (m.type) {
    case MsgType::kSet:
      if (!fits(m.keys[0], m.values[0].size(), &out)) {
        log_limited(kFullLog, out.text);
        return reply(id, out);
      }
      put(m.keys[0], std::move(m.values[0]));
      out.type = MsgType::kOk;
      reply(id, out);
      wake_waiters();
      return;
    case MsgType::kGet:
    case MsgType::kWait:
      if (std::all_of(m.keys.begin(), m.keys.end(), [&](auto& k) { return has(k); })) {
        answer_wait(id, m);
      } else {
        const auto deadline = Clock::now() + std::chrono::milliseconds(m.integer);
        conns_.at(id).parked = true;
        waiters_.push_back({id, std::move(m), deadline});
      }
      return;
    case MsgType::kAdd:
      out = add(m);
      reply(id, out);
      if (out.type == MsgType::kInt) wake_waiters();
      return;
    case MsgType::kCompareSet: {
      bool changed = false;
      reply(id, compare_set(m, &changed));
      if (changed) wake_waiters();
      return;
    }
    case MsgType::kCheck:
      out.type = MsgType::kBool;
      out.integer = std::all_of(m.keys.begin(), m.keys.end(), [&](auto& k) { return has(k); });
      reply(id, out);
      return;
    case MsgType::kDelete: {
      auto it = kv_.find(m.keys[0]);
      out.type = MsgType::kBool;
      out.integer = it != kv_.end();
      if (it != kv_.end()) {
        bytes_held_ -= it->first.size() + it->second.size();
        kv_.erase(it);
      }
      reply(id, out);
      return;
    }
    case MsgType::kNumKeys:
      out.type = MsgType::kInt;
      out.integer = count_user_keys(kv_);
      reply(id, out);
      return;
    default:
      drop(id, std::string("unexpected message type ") + proto::type_name(m.type));
      return;
  }
}

// kAdd's reply: the new value, or kError when the stored value is not an integer or the sum
// overflows (the value is then left as it was).
Message TCPStoreServer::add(const Message& m) {
  Message out;
  int64_t cur = 0;
  auto it = kv_.find(m.keys[0]);
  if (it != kv_.end() && !parse_int(it->second, &cur)) {
    out.type = MsgType::kError;
    out.text = "add: value of key '" + m.keys[0] + "' is not an integer";
    return out;
  }
  int64_t result = 0;
  if (__builtin_add_overflow(cur, m.integer, &result)) {
    out.type = MsgType::kError;
    out.text = "add: key '" + m.keys[0] + "' overflows int64";
    return out;
  }
  auto bytes = int_bytes(result);
  if (!fits(m.keys[0], bytes.size(), &out)) return out;
  put(m.keys[0], std::move(bytes));
  out.type = MsgType::kInt;
  out.integer = result;
  return out;
}

// kCompareSet's reply: the value after the operation (see Store::compare_set).
Message TCPStoreServer::compare_set(const Message& m, bool* changed) {
  const auto& expected = m.values[0];
  const auto& desired = m.values[1];
  auto it = kv_.find(m.keys[0]);
  Message out;
  out.type = MsgType::kValue;
  const bool swap = it == kv_.end() ? expected.empty() : it->second == expected;
  if (swap) {
    if (!fits(m.keys[0], desired.size(), &out)) return out;
    put(m.keys[0], desired);
    *changed = true;
    out.values = {desired};
  } else if (it == kv_.end()) {
    out.values = {expected};
  } else {
    out.values = {it->second};
  }
  return out;
}

void TCPStoreServer::answer_wait(uint64_t id, const Message& req) {
  Message out;
  if (req.type == MsgType::kGet) {
    out.type = MsgType::kValue;
    out.values = {kv_.at(req.keys[0])};
  } else {
    out.type = MsgType::kOk;
  }
  reply(id, out);
}

void TCPStoreServer::unpark(uint64_t id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  it->second.parked = false;
  dirty_.push_back(id);
}

void TCPStoreServer::wake_waiters() {
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    const auto& keys = it->req.keys;
    if (std::all_of(keys.begin(), keys.end(), [&](auto& k) { return has(k); })) {
      const uint64_t id = it->conn;
      Message req = std::move(it->req);
      it = waiters_.erase(it);
      unpark(id);
      answer_wait(id, req);
    } else {
      ++it;
    }
  }
}

void TCPStoreServer::expire_waiters() {
  const auto now = Clock::now();
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    if (it->deadline > now) {
      ++it;
      continue;
    }
    Message out;
    out.type = MsgType::kTimeout;
    for (auto& k : it->req.keys)
      if (!has(k)) out.keys.push_back(k);
    const uint64_t id = it->conn;
    it = waiters_.erase(it);
    unpark(id);
    reply(id, out);
  }
}

}  // namespace weft::dist::detail
