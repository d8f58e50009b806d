// TCPStore's client side (weft/distributed/tcp_store.h): every instance's connection to the
// server, with one request in flight at a time and every wait bounded by the store timeout; the
// server is in server.cpp.
#include "weft/distributed/tcp_store.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>

#include "distributed/store_util.h"
#include "distributed/tcp_store/net.h"
#include "distributed/tcp_store/server.h"

namespace weft::dist {

namespace {

using Clock = std::chrono::steady_clock;
using detail::describe_keys;
using detail::endpoint;
using detail::errno_str;
using detail::progress_interval;
using detail::report_waiting;
using proto::Message;
using proto::MsgType;

// Keys the store itself uses (worker registration), under detail::kInternalPrefix so that
// num_keys() leaves them out.
constexpr const char* kJoinedKey = "__weft_store__/joined";
constexpr const char* kReadyKey = "__weft_store__/ready";
// Slack a client grants the server beyond a waiting request's own timeout before it declares
// the server stalled (the server answers a timed-out wait itself, at the deadline), and the least
// time it waits for any reply: a short store timeout bounds waits for keys, but a busy machine
// must not be mistaken for a stalled server.
constexpr Duration kReplyGrace = std::chrono::seconds(10);

int64_t clamp_ms(Duration d) { return std::clamp<int64_t>(d.count(), 0, proto::kMaxTimeoutMs); }

void expect(const proto::Message& m, MsgType t, const std::string& store_name) {
  WEFT_CHECK_DIST(m.type == t, store_name, ": unexpected reply ", proto::type_name(m.type));
}

}  // namespace

TCPStore::TCPStore(std::string host, uint16_t port, int world_size, bool is_server,
                   Duration timeout, bool wait_for_workers, TCPStoreOptions options)
    : Store(timeout), host_(std::move(host)), port_(port), options_(std::move(options)) {
  if (is_server) {
    server_ = std::make_unique<detail::TCPStoreServer>(host_, port_, options_);
    port_ = server_->port();
  } else {
    WEFT_CHECK_DIST(port_ != 0, "TCPStore client: port 0 is only valid for the server (host ",
                    host_, ")");
  }
  connect_client();
  hello();
  if (world_size > 0 && wait_for_workers) this->wait_for_workers(world_size);
}

TCPStore::~TCPStore() {
  if (fd_ >= 0) ::close(fd_);
  server_.reset();
}

Duration TCPStore::reply_within() const { return std::max(timeout_, kReplyGrace); }

std::string TCPStore::name() const { return "TCPStore " + endpoint(host_, port_); }

void TCPStore::connect_client() {
  const auto deadline = Clock::now() + timeout_;
  std::string last_error = "timed out";
  auto backoff = std::chrono::milliseconds(5);
  const auto start = Clock::now();
  const Duration every = progress_interval(timeout_);
  auto next_report = start + every;
  // A server that is not up yet is normal at startup (ranks start in any order): retry
  // refused/unreachable connections with backoff until the store timeout.
  for (;;) {
    std::vector<sockaddr_storage> storage;
    const auto addrs = detail::resolve(host_, port_, &last_error, &storage);
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
        detail::set_nodelay(fd);
        fd_ = fd;
        return;
      }
      last_error = errno_str(errno);
      ::close(fd);
    }
    const auto now = Clock::now();
    if (now >= deadline) break;
    if (now >= next_report) {
      report_waiting(options_.label,
                     "for the store at " + endpoint(host_, port_) + " (" + last_error + ")",
                     now - start, timeout_);
      next_report += every;
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(backoff, deadline - now));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(250));
  }
  WEFT_DIST_ERROR(name(), ": could not connect within ", timeout_.count(), " ms (", last_error,
                  ")");
}

// Note [Store admission]: the first message on every connection says which job the client
// belongs to and carries the job's token; the server answers OK or refuses with a reason.
void TCPStore::hello() {
  if (options_.run_id.empty() && options_.token.empty()) return;
  Message m;
  m.type = MsgType::kHello;
  m.keys = {options_.run_id, options_.token};
  expect(request(m, reply_within()), MsgType::kOk, name());
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
  std::string what = proto::type_name(req.type);  // "GET ['key']"
  if (!req.keys.empty()) what.append(" ").append(describe_keys(req.keys));
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

void TCPStore::set(const std::string& key, const std::vector<uint8_t>& value) {
  Message m;
  m.type = MsgType::kSet;
  m.keys = {key};
  m.values = {value};
  expect(request(m, reply_within()), MsgType::kOk, name());
}

std::vector<uint8_t> TCPStore::get(const std::string& key) {
  Message m;
  m.type = MsgType::kGet;
  m.keys = {key};
  m.integer = clamp_ms(timeout_);
  auto r = request(m, Duration(m.integer) + kReplyGrace);
  WEFT_CHECK_DIST(r.type != MsgType::kTimeout, name(), ": get of key '", key, "' timed out after ",
                  m.integer, " ms");
  expect(r, MsgType::kValue, name());
  return std::move(r.values.at(0));
}

int64_t TCPStore::add(const std::string& key, int64_t delta) {
  Message m;
  m.type = MsgType::kAdd;
  m.keys = {key};
  m.integer = delta;
  auto r = request(m, reply_within());
  expect(r, MsgType::kInt, name());
  return r.integer;
}

std::vector<uint8_t> TCPStore::compare_set(const std::string& key,
                                           const std::vector<uint8_t>& expected,
                                           const std::vector<uint8_t>& desired) {
  Message m;
  m.type = MsgType::kCompareSet;
  m.keys = {key};
  m.values = {expected, desired};
  auto r = request(m, reply_within());
  expect(r, MsgType::kValue, name());
  return std::move(r.values.at(0));
}

bool TCPStore::check(const std::vector<std::string>& keys) {
  Message m;
  m.type = MsgType::kCheck;
  m.keys = keys;
  auto r = request(m, reply_within());
  expect(r, MsgType::kBool, name());
  return r.integer != 0;
}

bool TCPStore::delete_key(const std::string& key) {
  Message m;
  m.type = MsgType::kDelete;
  m.keys = {key};
  auto r = request(m, reply_within());
  expect(r, MsgType::kBool, name());
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
  expect(r, MsgType::kOk, name());
}

int64_t TCPStore::num_keys() {
  Message m;
  m.type = MsgType::kNumKeys;
  auto r = request(m, reply_within());
  expect(r, MsgType::kInt, name());
  return r.integer;
}

}  // namespace weft::dist
