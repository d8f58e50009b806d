#include "weft/distributed/tcp_store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <list>
#include <map>
#include <thread>
#include <unordered_map>

namespace weft::dist {

namespace {

using Clock = std::chrono::steady_clock;
using proto::Message;
using proto::MsgType;

// Keys the store itself uses (worker registration); hidden from num_keys().
constexpr const char* kInternalPrefix = "__weft_store__/";
constexpr const char* kJoinedKey = "__weft_store__/joined";
constexpr const char* kReadyKey = "__weft_store__/ready";
// Slack a client grants the server beyond a waiting request's own timeout before it declares
// the server stalled; the server answers a timed-out wait itself, at the deadline.
constexpr Duration kReplyGrace = std::chrono::seconds(1);

std::string errno_str(int e) { return std::strerror(e); }

std::string endpoint(const std::string& host, uint16_t port) {
  return host.find(':') != std::string::npos ? "[" + host + "]:" + std::to_string(port)
                                             : host + ":" + std::to_string(port);
}

std::string describe_keys(const std::vector<std::string>& keys) {
  std::string s = "[";
  for (size_t i = 0; i < keys.size(); ++i) s += (i ? ", '" : "'") + keys[i] + "'";
  return s + "]";
}

int64_t clamp_ms(Duration d) { return std::clamp<int64_t>(d.count(), 0, proto::kMaxTimeoutMs); }

// Resolves host for a TCP socket, IPv4 addresses first so that "localhost" means the same
// address to the server and to clients whatever the resolver's order.
std::vector<addrinfo> resolve(const std::string& host, uint16_t port, std::string* err,
                              std::vector<sockaddr_storage>* storage) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (host.empty() ? AI_PASSIVE : 0);
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  const int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) {
    *err = std::string("cannot resolve host: ") + gai_strerror(rc);
    return {};
  }
  std::vector<addrinfo> out;
  for (addrinfo* a = res; a; a = a->ai_next)
    if (a->ai_family == AF_INET || a->ai_family == AF_INET6) out.push_back(*a);
  std::stable_sort(out.begin(), out.end(), [](const addrinfo& a, const addrinfo& b) {
    return a.ai_family == AF_INET && b.ai_family != AF_INET;
  });
  // Own the addresses so the list outlives freeaddrinfo.
  storage->resize(out.size());
  for (size_t i = 0; i < out.size(); ++i) {
    std::memcpy(&(*storage)[i], out[i].ai_addr, out[i].ai_addrlen);
    out[i].ai_addr = reinterpret_cast<sockaddr*>(&(*storage)[i]);
    out[i].ai_next = nullptr;
    out[i].ai_canonname = nullptr;
  }
  freeaddrinfo(res);
  if (out.empty()) *err = "host has no IPv4/IPv6 address";
  return out;
}

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

std::string peer_name(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
    port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    port = ntohs(a->sin6_port);
  }
  return endpoint(buf, port);
}

bool parse_int(const std::vector<uint8_t>& v, int64_t* out) {
  const char* b = reinterpret_cast<const char*>(v.data());
  const auto [p, ec] = std::from_chars(b, b + v.size(), *out);
  return ec == std::errc() && p == b + v.size() && !v.empty();
}

std::vector<uint8_t> int_bytes(int64_t v) {
  const std::string s = std::to_string(v);
  return {s.begin(), s.end()};
}

}  // namespace

namespace detail {

// The store's server: one thread, a poll() loop over non-blocking sockets. The key-value map is
// touched only by that thread, so it needs no lock. Waiting requests (GET of a missing key,
// WAIT) are parked until their keys appear or their deadline passes; while a connection has a
// parked request its later bytes stay unread, which keeps replies in request order.
class TCPStoreServer {
 public:
  TCPStoreServer(const std::string& host, uint16_t port) : host_(host) {
    std::string err;
    std::vector<sockaddr_storage> storage;
    const auto addrs = resolve(host, port, &err, &storage);
    WEFT_CHECK_DIST(!addrs.empty(), "TCPStore server: cannot listen on ", endpoint(host, port),
                    ": ", err);
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
    WEFT_CHECK_DIST(listen_fd_ >= 0, "TCPStore server: cannot listen on ", endpoint(host, port),
                    ": ", errno_str(last));
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
    port_ = ntohs(ss.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                          : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    if (pipe2(wake_, O_NONBLOCK | O_CLOEXEC) != 0) {
      const int e = errno;
      ::close(listen_fd_);
      WEFT_DIST_ERROR("TCPStore server: pipe2 failed: ", errno_str(e));
    }
    thread_ = std::thread([this] { run(); });
  }

  ~TCPStoreServer() {
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

  uint16_t port() const { return port_; }

 private:
  struct Conn {
    int fd = -1;
    std::string peer;
    std::vector<uint8_t> in;
    std::vector<uint8_t> out;
    size_t out_pos = 0;
    bool parked = false;
    bool dead = false;
    bool pending_out() const { return out_pos < out.size(); }
  };
  struct Waiter {
    uint64_t conn;
    Message req;
    Clock::time_point deadline;
  };

  void log(const std::string& msg) {
    std::fprintf(stderr, "[weft] TCPStore server %s: %s\n", endpoint(host_, port_).c_str(),
                 msg.c_str());
  }

  void run() {
    try {
      loop();
    } catch (const std::exception& e) {
      // Clients see their connections close and fail with DistError instead of hanging.
      log(std::string("server loop failed, stopping: ") + e.what());
    }
  }

  void loop() {
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

  void accept_all() {
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
  void drop(uint64_t id, const std::string& reason) {
    auto it = conns_.find(id);
    if (it == conns_.end() || it->second.dead) return;
    if (!reason.empty()) log("closing connection from " + it->second.peer + ": " + reason);
    it->second.dead = true;
    it->second.in.clear();
    it->second.out.clear();
    waiters_.remove_if([id](const Waiter& w) { return w.conn == id; });
  }

  void read_some(uint64_t id) {
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

  void flush(uint64_t id) {
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

  void reply(uint64_t id, const Message& m) {
    Conn& c = conns_.at(id);
    if (c.dead) return;
    const auto bytes = proto::encode_message(m);
    c.out.insert(c.out.end(), bytes.begin(), bytes.end());
    flush(id);
  }

  // Serves complete requests from the connection's buffer, one at a time: it stops at a parked
  // request or an unsent reply and resumes (via dirty_) once that clears.
  void process(uint64_t id) {
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
        drop(id,
             std::string("malformed message: ") + proto::type_name(m.type) + " is not a request");
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

  void run_dirty() {
    while (!dirty_.empty()) {
      const uint64_t id = dirty_.back();
      dirty_.pop_back();
      process(id);
    }
  }

  bool has(const std::string& k) const { return kv_.count(k) != 0; }

  void handle(uint64_t id, Message m) {
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
      case MsgType::kAdd: {
        int64_t cur = 0;
        auto it = kv_.find(m.keys[0]);
        if (it != kv_.end() && !parse_int(it->second, &cur)) {
          out.type = MsgType::kError;
          out.text = "add: value of key '" + m.keys[0] + "' is not an integer";
          reply(id, out);
          return;
        }
        int64_t result = 0;
        if (__builtin_add_overflow(cur, m.integer, &result)) {
          out.type = MsgType::kError;
          out.text = "add: key '" + m.keys[0] + "' overflows int64";
          reply(id, out);
          return;
        }
        kv_[m.keys[0]] = int_bytes(result);
        out.type = MsgType::kInt;
        out.integer = result;
        reply(id, out);
        wake_waiters();
        return;
      }
      case MsgType::kCompareSet: {
        auto& expected = m.values[0];
        auto& desired = m.values[1];
        auto it = kv_.find(m.keys[0]);
        out.type = MsgType::kValue;
        bool changed = false;
        if (it == kv_.end()) {
          if (expected.empty()) {
            kv_[m.keys[0]] = desired;
            changed = true;
            out.values = {desired};
          } else {
            out.values = {expected};
          }
        } else if (it->second == expected) {
          it->second = desired;
          changed = true;
          out.values = {desired};
        } else {
          out.values = {it->second};
        }
        reply(id, out);
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
      case MsgType::kNumKeys: {
        const size_t plen = std::strlen(kInternalPrefix);
        out.type = MsgType::kInt;
        out.integer = static_cast<int64_t>(std::count_if(kv_.begin(), kv_.end(), [&](auto& kv) {
          return kv.first.compare(0, plen, kInternalPrefix) != 0;
        }));
        reply(id, out);
        return;
      }
      default:
        drop(id, std::string("unexpected message type ") + proto::type_name(m.type));
        return;
    }
  }

  void answer_wait(uint64_t id, const Message& req) {
    Message out;
    if (req.type == MsgType::kGet) {
      out.type = MsgType::kValue;
      out.values = {kv_.at(req.keys[0])};
    } else {
      out.type = MsgType::kOk;
    }
    reply(id, out);
  }

  void unpark(uint64_t id) {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    it->second.parked = false;
    dirty_.push_back(id);
  }

  void wake_waiters() {
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

  void expire_waiters() {
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

  std::string host_;
  uint16_t port_ = 0;
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

}  // namespace detail

TCPStore::TCPStore(std::string host, uint16_t port, int world_size, bool is_server,
                   Duration timeout, bool wait_for_workers)
    : Store(timeout), host_(std::move(host)), port_(port) {
  if (is_server) {
    server_ = std::make_unique<detail::TCPStoreServer>(host_, port_);
    port_ = server_->port();
  } else {
    WEFT_CHECK_DIST(port_ != 0, "TCPStore client: port 0 is only valid for the server (host ",
                    host_, ")");
  }
  connect_client();
  if (world_size > 0 && wait_for_workers) this->wait_for_workers(world_size);
}

TCPStore::~TCPStore() {
  if (fd_ >= 0) ::close(fd_);
  server_.reset();
}

std::string TCPStore::name() const { return "TCPStore " + endpoint(host_, port_); }

void TCPStore::connect_client() {
  const auto deadline = Clock::now() + timeout_;
  std::string last_error = "timed out";
  auto backoff = std::chrono::milliseconds(5);
  // A server that is not up yet is normal at startup (ranks start in any order): retry
  // refused/unreachable connections with backoff until the store timeout.
  for (;;) {
    std::vector<sockaddr_storage> storage;
    const auto addrs = resolve(host_, port_, &last_error, &storage);
    for (const auto& a : addrs) {
      const int fd = socket(a.ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        last_error = errno_str(errno);
        continue;
      }
      int rc = ::connect(fd, a.ai_addr, a.ai_addrlen);
      if (rc != 0 && errno == EINPROGRESS) {
        const auto left =
            std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
        pollfd p{fd, POLLOUT, 0};
        rc = ::poll(&p, 1, static_cast<int>(std::clamp<int64_t>(left, 0, 60000)));
        if (rc > 0) {
          int err = 0;
          socklen_t len = sizeof(err);
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
          rc = err == 0 ? 0 : -1;
          errno = err;
        } else {
          rc = -1;
          errno = ETIMEDOUT;
        }
      }
      if (rc == 0) {
        set_nodelay(fd);
        fd_ = fd;
        return;
      }
      last_error = errno_str(errno);
      ::close(fd);
    }
    const auto now = Clock::now();
    if (now >= deadline) break;
    std::this_thread::sleep_for(std::min<Clock::duration>(backoff, deadline - now));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(250));
  }
  WEFT_DIST_ERROR(name(), ": could not connect within ", timeout_.count(), " ms (", last_error,
                  ")");
}

void TCPStore::wait_for_workers(int world_size) {
  const int64_t joined = add(kJoinedKey, 1);
  if (joined == world_size) set(kReadyKey, std::vector<uint8_t>{'1'});
  if (!server_) return;  // as in PyTorch, only the server waits for everyone
  try {
    wait({kReadyKey}, timeout_);
  } catch (const DistError&) {
    WEFT_DIST_ERROR(name(), ": only ", add(kJoinedKey, 0), " of ", world_size,
                    " workers joined within ", timeout_.count(), " ms");
  }
}

proto::Message TCPStore::request(const proto::Message& req, Duration reply_within) {
  const auto bytes = proto::encode_message(req);
  const std::string what = std::string(proto::type_name(req.type)) +
                           (req.keys.empty() ? "" : " " + describe_keys(req.keys));
  std::lock_guard<std::mutex> lock(mu_);
  WEFT_CHECK_DIST(fd_ >= 0, name(), ": ", what, ": connection is closed after an earlier failure");
  const auto deadline = Clock::now() + reply_within;
  // Any failure leaves the stream at an unknown position, so the connection is closed for good.
  auto lost = [&](const std::string& why) {
    ::close(fd_);
    fd_ = -1;
    WEFT_DIST_ERROR(name(), ": ", what, ": ", why);
  };
  auto wait_for = [&](short ev) {
    for (;;) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0)
        lost("no reply within " + std::to_string(reply_within.count()) + " ms (server stalled?)");
      pollfd p{fd_, ev, 0};
      const int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 60000)));
      if (r > 0) return;
      if (r < 0 && errno != EINTR) lost("poll: " + errno_str(errno));
    }
  };
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t r = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (r > 0) {
      sent += static_cast<size_t>(r);
    } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      wait_for(POLLOUT);
    } else if (!(r < 0 && errno == EINTR)) {
      lost("connection lost while sending (" + errno_str(errno) + ")");
    }
  }
  std::vector<uint8_t> in;
  uint8_t buf[65536];
  for (;;) {
    proto::Message resp;
    const auto pr = proto::parse_message(in.data(), in.size(), &resp);
    if (pr.status == proto::ParseResult::kInvalid) lost("malformed reply: " + pr.error);
    if (pr.status == proto::ParseResult::kOk) {
      if (pr.consumed != in.size()) lost("unexpected bytes after the reply");
      WEFT_CHECK_DIST(resp.type != MsgType::kError, name(), ": ", what, ": ", resp.text);
      return resp;
    }
    wait_for(POLLIN);
    const ssize_t r = ::recv(fd_, buf, sizeof(buf), 0);
    if (r > 0) {
      in.insert(in.end(), buf, buf + r);
    } else if (r == 0) {
      lost("connection closed by the server (server died?)");
    } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
      lost("connection lost (" + errno_str(errno) + ")");
    }
  }
}

namespace {
void expect(const proto::Message& m, MsgType t, const std::string& where) {
  WEFT_CHECK_DIST(m.type == t, "TCPStore ", where, ": unexpected reply ", proto::type_name(m.type));
}
}  // namespace

void TCPStore::set(const std::string& key, const std::vector<uint8_t>& value) {
  Message m;
  m.type = MsgType::kSet;
  m.keys = {key};
  m.values = {value};
  expect(request(m, timeout_), MsgType::kOk, endpoint(host_, port_));
}

std::vector<uint8_t> TCPStore::get(const std::string& key) {
  Message m;
  m.type = MsgType::kGet;
  m.keys = {key};
  m.integer = clamp_ms(timeout_);
  auto r = request(m, Duration(m.integer) + kReplyGrace);
  WEFT_CHECK_DIST(r.type != MsgType::kTimeout, name(), ": get of key '", key, "' timed out after ",
                  m.integer, " ms");
  expect(r, MsgType::kValue, endpoint(host_, port_));
  return std::move(r.values.at(0));
}

int64_t TCPStore::add(const std::string& key, int64_t delta) {
  Message m;
  m.type = MsgType::kAdd;
  m.keys = {key};
  m.integer = delta;
  auto r = request(m, timeout_);
  expect(r, MsgType::kInt, endpoint(host_, port_));
  return r.integer;
}

std::vector<uint8_t> TCPStore::compare_set(const std::string& key,
                                           const std::vector<uint8_t>& expected,
                                           const std::vector<uint8_t>& desired) {
  Message m;
  m.type = MsgType::kCompareSet;
  m.keys = {key};
  m.values = {expected, desired};
  auto r = request(m, timeout_);
  expect(r, MsgType::kValue, endpoint(host_, port_));
  return std::move(r.values.at(0));
}

bool TCPStore::check(const std::vector<std::string>& keys) {
  Message m;
  m.type = MsgType::kCheck;
  m.keys = keys;
  auto r = request(m, timeout_);
  expect(r, MsgType::kBool, endpoint(host_, port_));
  return r.integer != 0;
}

bool TCPStore::delete_key(const std::string& key) {
  Message m;
  m.type = MsgType::kDelete;
  m.keys = {key};
  auto r = request(m, timeout_);
  expect(r, MsgType::kBool, endpoint(host_, port_));
  return r.integer != 0;
}

void TCPStore::wait(const std::vector<std::string>& keys, Duration timeout) {
  Message m;
  m.type = MsgType::kWait;
  m.keys = keys;
  m.integer = clamp_ms(timeout);
  auto r = request(m, Duration(m.integer) + kReplyGrace);
  WEFT_CHECK_DIST(r.type != MsgType::kTimeout, name(), ": wait for keys ", describe_keys(keys),
                  " timed out after ", m.integer, " ms; missing ", describe_keys(r.keys));
  expect(r, MsgType::kOk, endpoint(host_, port_));
}

int64_t TCPStore::num_keys() {
  Message m;
  m.type = MsgType::kNumKeys;
  auto r = request(m, timeout_);
  expect(r, MsgType::kInt, endpoint(host_, port_));
  return r.integer;
}

}  // namespace weft::dist
