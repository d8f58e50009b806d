#include "distributed/tcp_store/server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <optional>

#include "distributed/store_util.h"
#include "distributed/tcp_store/net.h"
#include "weft/error.h"

namespace weft::dist::detail {

using proto::Message;
using proto::MsgType;

namespace {

constexpr auto kLogInterval = std::chrono::seconds(10);
// After accept() fails for want of descriptors or memory, stop accepting this long: retrying at
// once would spin on the same error.
constexpr auto kAcceptPause = std::chrono::milliseconds(200);
// Connections over the limit that are kept just long enough to be told why they are refused.
constexpr size_t kMaxRefused = 64;

}  // namespace

TCPStoreServer::TCPStoreServer(const std::string& host, uint16_t port,
                               const TCPStoreOptions& options)
    : host_(host), options_(options) {
  if (options.listen_fd >= 0) {
    adopt(options.listen_fd, port);
  } else {
    listen_on(host, port);
  }
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

// Takes over a socket a launcher bound and listens on (weft-run: WEFT_STORE_LISTEN_FD). The
// server works on its own duplicate, so the launcher's descriptor stays valid for a restart.
void TCPStoreServer::adopt(int fd, uint16_t port) {
  int listening = 0;
  socklen_t optlen = sizeof(listening);
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  WEFT_CHECK_DIST(getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) == 0 &&
                      listening && getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0,
                  "TCPStore server: descriptor ", fd,
                  " (WEFT_STORE_LISTEN_FD) is not a listening socket");
  const uint16_t bound =
      ntohs(ss.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                    : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  WEFT_CHECK_DIST(port == 0 || bound == port, "TCPStore server: descriptor ", fd,
                  " (WEFT_STORE_LISTEN_FD) listens on port ", bound, ", not on port ", port);
  listen_fd_ = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  WEFT_CHECK_DIST(listen_fd_ >= 0, "TCPStore server: cannot duplicate descriptor ", fd, ": ",
                  errno_str(errno));
  fcntl(listen_fd_, F_SETFL, fcntl(listen_fd_, F_GETFL) | O_NONBLOCK);
  port_ = bound;
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

// At most one line per kind per interval; the next one says how many were left out.
void TCPStoreServer::log_limited(int kind, const std::string& msg) {
  const auto now = Clock::now();
  if (now < next_log_[kind]) {
    ++suppressed_[kind];
    return;
  }
  std::string line = msg;
  if (suppressed_[kind] > 0)
    line += " (" + std::to_string(suppressed_[kind]) + " more like it since the last report)";
  log(line);
  suppressed_[kind] = 0;
  next_log_[kind] = now + kLogInterval;
}

// The poll timeout: the nearest waiter's deadline or the end of an accept pause; -1 if neither.
int TCPStoreServer::poll_timeout_ms() const {
  std::optional<Clock::time_point> next;
  for (auto& w : waiters_) next = next ? std::min(*next, w.deadline) : w.deadline;
  if (accept_paused_until_ > Clock::now())
    next = next ? std::min(*next, accept_paused_until_) : accept_paused_until_;
  if (!next) return -1;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(*next - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(ms, 0, 60000));
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
    // A negative descriptor is skipped by poll(): no accepting during a pause.
    const bool paused = accept_paused_until_ > Clock::now();
    fds.push_back({paused ? -1 : listen_fd_, POLLIN, 0});
    for (auto& [id, c] : conns_) {
      short ev = POLLRDHUP;
      if (!c.parked && !c.pending_out()) ev |= POLLIN;
      if (c.pending_out()) ev |= POLLOUT;
      fds.push_back({c.fd, ev, 0});
      ids.push_back(id);
    }
    const int n = ::poll(fds.data(), fds.size(), poll_timeout_ms());
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
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // Out of descriptors or memory: the pending connection stays queued, so retrying at once
      // would fail again in a tight loop. Pause, and say so once per interval.
      accept_paused_until_ = Clock::now() + kAcceptPause;
      log_limited(kAcceptLog, "accept failed: " + errno_str(errno) + "; pausing new connections");
      return;
    }
    set_nodelay(fd);
    Conn c;
    c.fd = fd;
    c.peer = peer_name(ss);
    c.admitted = options_.token.empty();
    if (conns_.size() - refused_ >= options_.max_connections) {
      const std::string why = "refused: the store at " + endpoint(host_, port_) + " holds " +
                              std::to_string(options_.max_connections) + " connections, its limit";
      log_limited(kRefuseLog, "connection from " + c.peer + " " + why);
      if (refused_ >= kMaxRefused) {
        ::close(fd);
        continue;
      }
      c.refuse = why;
      ++refused_;
    }
    conns_.emplace(next_id_++, std::move(c));
  }
}

// Marks a connection for closing; its parked requests die with it. An empty reason is an
// ordinary disconnect, not worth a log line.
void TCPStoreServer::drop(uint64_t id, const std::string& reason) {
  auto it = conns_.find(id);
  if (it == conns_.end() || it->second.dead) return;
  if (!reason.empty()) log("closing connection from " + it->second.peer + ": " + reason);
  if (!it->second.refuse.empty()) --refused_;
  it->second.refuse.clear();
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
  if (c.close_after) return drop(id, "");
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
    if (!admit(id, m)) break;
    if (m.type == MsgType::kHello) continue;
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

}  // namespace weft::dist::detail
