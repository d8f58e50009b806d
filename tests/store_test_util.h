// Helpers for the store tests (test_store.cpp, test_store_admission.cpp): timeouts, raw
// sockets that speak (or garble) the TCPStore protocol, DistError checks and forked children.
#pragma once

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "weft/distributed/store.h"
#include "weft/distributed/store_protocol.h"

namespace weft::test::store {

using namespace weft::dist;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

inline constexpr Duration kShort = milliseconds(200);
inline constexpr Duration kLong = milliseconds(120000);   // for what must succeed: generous
inline constexpr Duration kDay = std::chrono::hours(24);  // a timeout that must not be what fires

inline std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }

inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Runs fn and checks it throws DistError whose message contains every needle.
inline void expect_dist_error(const std::function<void()>& fn,
                              const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "expected DistError";
  } catch (const DistError& e) {
    for (auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "'" << n << "' not in: " << e.what();
  }
}

// A port nothing listens on (bound, read back, released).
inline uint16_t free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

inline int raw_connect(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  return fd;
}

// Reads until the peer closes or `ms` pass; returns the bytes and whether it closed.
inline std::pair<std::vector<uint8_t>, bool> raw_read(int fd, int ms) {
  std::vector<uint8_t> got;
  const auto deadline = Clock::now() + milliseconds(ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return {got, false};
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    uint8_t buf[4096];
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return {got, true};
    got.insert(got.end(), buf, buf + n);
  }
}

// Whether `bytes` hold n complete messages.
inline bool replies_complete(const std::vector<uint8_t>& bytes, int n) {
  size_t pos = 0;
  for (int i = 0; i < n; ++i) {
    const auto r = proto::parse_message(bytes.data() + pos, bytes.size() - pos, nullptr);
    if (r.status != proto::ParseResult::kOk) return false;
    pos += r.consumed;
  }
  return true;
}

inline proto::Message msg(proto::MsgType t, std::vector<std::string> keys = {},
                          std::vector<std::vector<uint8_t>> values = {}, int64_t integer = 0) {
  proto::Message m;
  m.type = t;
  m.keys = std::move(keys);
  m.values = std::move(values);
  m.integer = integer;
  return m;
}

// Waits for a forked child and returns its exit code (-1 if it did not exit normally).
inline int join_child(pid_t pid) {
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Runs fn in a forked child, which exits 0 on success and 1 on any exception.
inline pid_t fork_child(const std::function<void()>& fn) {
  const pid_t pid = fork();
  if (pid == 0) {
    int code = 0;
    try {
      fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child failed: %s\n", e.what());
      code = 1;
    }
    _exit(code);
  }
  return pid;
}

}  // namespace weft::test::store
