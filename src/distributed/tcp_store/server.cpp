#include "distributed/tcp_store/server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "distributed/store_util.h"
#include "distributed/tcp_store/net.h"
#include "weft/error.h"

namespace weft::dist::detail {

using proto::Message;
using proto::MsgType;

TCPStoreServer::TCPStoreServer(const std::string& host, uint16_t port) : host_(host) {
  listen_on(host, port);
  if (pipe2(wake_, O_NONBLOCK | O_CLOEXEC) != 0) {
    const int e = errno;
    ::close(listen_fd_);
    WEFT_DIST_ERROR("TCPStore server: pipe2 failed: ", errno_str(e));
  }
  thread_ = std::thread([this] { run(); });
}

// Binds the first address of host that accepts, and learns the port (port 0: the kernel's pick).
void TCPStoreServer::listen_on(const std::string& host, uint16_t port) {
  std::string err;
  std::vector<sockaddr_storage> storage;
  const auto addrs = resolve(host, port, &err, &storage);
  WEFT_CHECK_DIST(!addrs.empty(), "TCPStore server: cannot listen on ", endpoint(host, port), ": ",
                  err);
  int last = 0;
  for (const auto& a : addrs) {
    const int fd = socket(a.ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      last = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, a.ai_addr, a.ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0) {
      listen_fd_ = fd;
      break;
    }
    last = errno;
    ::close(fd);
  }
  WEFT_CHECK_DIST(listen_fd_ >= 0, "TCPStore server: cannot listen on ", endpoint(host, port), ": ",
                  errno_str(last));
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  port_ = ntohs(ss.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                        : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

TCPStoreServer::~TCPStoreServer() {
  stop_.store(true);
  const char c = 0;
  // The pipe is non-blocking and a full pipe already wakes the loop, so the result is moot.
  [[maybe_unused]] ssize_t n = ::write(wake_[1], &c, 1);
  thread_.join();
  for (auto& [id, c2] : conns_) ::close(c2.fd);
  ::close(listen_fd_);
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void TCPStoreServer::log(const std::string& msg) {
  std::fprintf(stderr, "[weft] TCPStore server %s: %s\n", endpoint(host_, port_).c_str(),
               msg.c_str());
}

void TCPStoreServer::run() {
  try {
    loop();
  } catch (const std::exception& e) {
    // Clients see their connections close and fail with DistError instead of hanging.
    log(std::string("server loop failed, stopping: ") + e.what());
  }
}

void TCPStoreServer::loop() {
  std::vector<pollfd> fds;
  std::vector<uint64_t> ids;
  while (!stop_.load()) {
    fds.clear();
    ids.clear();
    fds.push_back({wake_[0], POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (auto& [id, c] : conns_) {
      short ev = POLLRDHUP;
      if (!c.parked && !c.pending_out()) ev |= POLLIN;
      if (c.pending_out()) ev |= POLLOUT;
      fds.push_back({c.fd, ev, 0});
      ids.push_back(id);
    }
    int timeout_ms = -1;
    if (!waiters_.empty()) {
      auto next = waiters_.front().deadline;
      for (auto& w : waiters_) next = std::min(next, w.deadline);
      const auto ms = std::chrono::ceil<std::chrono::milliseconds>(next - Clock::now()).count();
      timeout_ms = static_cast<int>(std::clamp<int64_t>(ms, 0, 60000));
    }
    const int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      WEFT_DIST_ERROR("poll failed: ", errno_str(errno));
    }
    if (fds[0].revents) {
      char buf[64];
      while (::read(wake_[0], buf, sizeof(buf)) > 0) {
      }
    }
    if (stop_.load()) break;
    if (fds[1].revents & POLLIN) accept_all();
    for (size_t i = 0; i < ids.size(); ++i) {
      const short re = fds[i + 2].revents;
      if (!re) continue;
      auto it = conns_.find(ids[i]);
      if (it == conns_.end() || it->second.dead) continue;
      Conn& c = it->second;
      if (re & POLLNVAL) {
        drop(ids[i], "invalid descriptor");
        continue;
      }
      if (re & POLLOUT) flush(ids[i]);
      if (c.dead) continue;
      if ((re & POLLIN) || ((re & (POLLHUP | POLLERR)) && !c.parked && !c.pending_out())) {
        read_some(ids[i]);
      } else if (re & (POLLHUP | POLLERR | POLLRDHUP)) {
        drop(ids[i], "");  // peer went away while its request was parked or reply pending
      }
    }
    expire_waiters();
    run_dirty();
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (it->second.dead) {
        ::close(it->second.fd);
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
  }
}

void TCPStoreServer::accept_all() {
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    const int fd =
        accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) log("accept failed: " + errno_str(errno));
      return;
    }
    set_nodelay(fd);
    Conn c;
    c.fd = fd;
    c.peer = peer_name(ss);
    conns_.emplace(next_id_++, std::move(c));
  }
}

// Marks a connection for closing; its parked requests die with it. An empty reason is an
// ordinary disconnect, not worth a log line.
void TCPStoreServer::drop(uint64_t id, const std::string& reason) {
  auto it = conns_.find(id);
  if (it == conns_.end() || it->second.dead) return;
  if (!reason.empty()) log("closing connection from " + it->second.peer + ": " + reason);
  it->second.dead = true;
  it->second.in.clear();
  it->second.out.clear();
  waiters_.remove_if([id](const Waiter& w) { return w.conn == id; });
}

void TCPStoreServer::read_some(uint64_t id) {
  Conn& c = conns_.at(id);
  // Read at most a few MiB per round so one busy client cannot starve the others.
  size_t budget = size_t{4} << 20;
  uint8_t buf[65536];
  while (budget > 0) {
    const ssize_t r = ::recv(c.fd, buf, std::min(sizeof(buf), budget), 0);
    if (r > 0) {
      c.in.insert(c.in.end(), buf, buf + r);
      budget -= static_cast<size_t>(r);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    // EOF or error: serve what arrived complete (replies may still go out), then close.
    process(id);
    drop(id, r < 0 ? "recv: " + errno_str(errno) : "");
    return;
  }
  process(id);
}

void TCPStoreServer::flush(uint64_t id) {
  Conn& c = conns_.at(id);
  while (c.pending_out()) {
    const ssize_t r = ::send(c.fd, c.out.data() + c.out_pos, c.out.size() - c.out_pos,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r > 0) {
      c.out_pos += static_cast<size_t>(r);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    drop(id, "");
    return;
  }
  c.out.clear();
  c.out_pos = 0;
  dirty_.push_back(id);  // more buffered requests may be waiting for this reply to drain
}

void TCPStoreServer::reply(uint64_t id, const Message& m) {
  Conn& c = conns_.at(id);
  if (c.dead) return;
  const auto bytes = proto::encode_message(m);
  c.out.insert(c.out.end(), bytes.begin(), bytes.end());
  flush(id);
}

// Serves complete requests from the connection's buffer, one at a time: it stops at a parked
// request or an unsent reply and resumes (via dirty_) once that clears.
void TCPStoreServer::process(uint64_t id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Conn& c = it->second;
  size_t pos = 0;
  while (!c.dead && !c.parked && !c.pending_out() && pos < c.in.size()) {
    Message m;
    const auto r = proto::parse_message(c.in.data() + pos, c.in.size() - pos, &m);
    if (r.status == proto::ParseResult::kNeedMore) break;
    if (r.status == proto::ParseResult::kInvalid) {
      drop(id, "malformed message: " + r.error);
      return;
    }
    pos += r.consumed;
    if (!proto::is_request(m.type)) {
      drop(id, std::string("malformed message: ") + proto::type_name(m.type) + " is not a request");
      return;
    }
    try {
      handle(id, std::move(m));
    } catch (const std::exception& e) {
      drop(id, std::string("failed to serve request: ") + e.what());
      return;
    }
  }
  if (!c.dead) c.in.erase(c.in.begin(), c.in.begin() + static_cast<std::ptrdiff_t>(pos));
}

void TCPStoreServer::run_dirty() {
  while (!dirty_.empty()) {
    const uint64_t id = dirty_.back();
    dirty_.pop_back();
    process(id);
  }
}

void TCPStoreServer::handle(uint64_t id, Message m) {
  Message out;
  switch (m.type) {
    case MsgType::kSet:
      kv_[m.keys[0]] = std::move(m.values[0]);
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
    case MsgType::kDelete:
      out.type = MsgType::kBool;
      out.integer = kv_.erase(m.keys[0]) > 0;
      reply(id, out);
      return;
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
  kv_[m.keys[0]] = int_bytes(result);
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
  if (it == kv_.end()) {
    if (expected.empty()) {
      kv_[m.keys[0]] = desired;
      *changed = true;
      out.values = {desired};
    } else {
      out.values = {expected};
    }
  } else if (it->second == expected) {
    it->second = desired;
    *changed = true;
    out.values = {desired};
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
