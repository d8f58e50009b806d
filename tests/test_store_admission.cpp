// TCPStore admission and limits (Note [Store admission]): a client of another job is refused
// naming the port and both run ids, a store with a token serves only clients that present it, and
// connections, bytes and accept errors are bounded without harming the store or its other clients.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <thread>

#include "store_test_util.h"
#include "weft/distributed/tcp_store.h"

using namespace weft::test::store;

namespace {

TCPStoreOptions job(const std::string& run_id, const std::string& token) {
  TCPStoreOptions o;
  o.run_id = run_id;
  o.token = token;
  return o;
}

std::unique_ptr<TCPStore> client(uint16_t port, TCPStoreOptions o = {}) {
  return std::make_unique<TCPStore>("127.0.0.1", port, -1, false, kLong, true, std::move(o));
}

// The reply to one raw request on a fresh connection, and whether the server then closed it.
std::pair<proto::Message, bool> raw_request(uint16_t port, const proto::Message& m) {
  const int fd = raw_connect(port);
  const auto b = proto::encode_message(m);
  EXPECT_EQ(send(fd, b.data(), b.size(), MSG_NOSIGNAL), static_cast<ssize_t>(b.size()));
  const auto [got, closed] = raw_read(fd, 120000);
  close(fd);
  proto::Message reply;
  EXPECT_EQ(proto::parse_message(got.data(), got.size(), &reply).status, proto::ParseResult::kOk);
  return {reply, closed};
}

// User plus system CPU time a process has used, from /proc/PID/stat.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i)
    if (i == 14 || i == 15) ticks += std::stod(field);  // utime, stime
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace

TEST(TCPStoreAdmission, AnotherJobIsRefusedNamingThePort) {
  TCPStore server("127.0.0.1", 0, -1, true, kLong, true, job("job-a", "secret"));
  const std::string port = std::to_string(server.port());
  expect_dist_error(
      [&] { client(server.port(), job("job-b", "other")); },
      {"port " + port + " is used by another job (run id job-a", "belongs to run id job-b"});
  auto mine = client(server.port(), job("job-a", "secret"));
  mine->set("k", "v");
  EXPECT_EQ(server.get_string("k"), "v");
}

TEST(TCPStoreAdmission, OnlyClientsWithTheTokenReadOrWrite) {
  TCPStore server("127.0.0.1", 0, -1, true, kLong, true, job("", "secret"));
  server.set("private", "1");
  expect_dist_error([&] { client(server.port(), job("", "guess")); },
                    {"wrong or missing job token"});
  // A plain client (no HELLO) is refused at its first request, and learns why.
  auto plain = client(server.port());
  expect_dist_error([&] { plain->get("private"); }, {"admits only its job's clients"});
  // Raw requests without the token: an error reply, the connection closed, nothing changed.
  const auto [reply, closed] =
      raw_request(server.port(), msg(proto::MsgType::kSet, {"private"}, {bytes("evil")}));
  EXPECT_EQ(reply.type, proto::MsgType::kError);
  EXPECT_TRUE(closed);
  EXPECT_EQ(server.get_string("private"), "1");
  auto good = client(server.port(), job("", "secret"));
  EXPECT_EQ(good->get_string("private"), "1");
  EXPECT_EQ(good->num_keys(), 1);
}

TEST(TCPStoreAdmission, ConnectionsOverTheLimitAreToldWhy) {
  TCPStoreOptions o;
  o.max_connections = 3;  // the server's own client is one of them
  TCPStore server("127.0.0.1", 0, -1, true, kLong, true, o);
  auto a = client(server.port()), b = client(server.port());
  a->set("x", "1");
  auto c = client(server.port());
  expect_dist_error([&] { c->get("x"); }, {"holds 3 connections, its limit"});
  EXPECT_EQ(b->get_string("x"), "1");  // the others are unaffected
  a.reset();
  // The slot is free once the server has seen `a` go; until then a new client is refused too.
  for (int attempt = 0;; ++attempt) {
    auto d = client(server.port());
    try {
      EXPECT_EQ(d->get_string("x"), "1");
      break;
    } catch (const DistError& e) {
      ASSERT_LT(attempt, 10000) << e.what();
      std::this_thread::sleep_for(milliseconds(10));
    }
  }
}

TEST(TCPStoreAdmission, BytesOverTheLimitAreRefused) {
  TCPStoreOptions o;
  o.max_bytes = 1 << 20;
  TCPStore server("127.0.0.1", 0, -1, true, kLong, true, o);
  const std::string big(600 << 10, 'x');
  server.set("a", big);
  expect_dist_error([&] { server.set("b", big); }, {"store is full", "key 'b'"});
  EXPECT_FALSE(server.check({"b"}));
  server.set("a", big);  // replacing a value frees the old one first
  EXPECT_TRUE(server.delete_key("a"));
  server.set("b", big);
  EXPECT_EQ(server.get_string("b").size(), big.size());
  EXPECT_EQ(server.add("n", 5), 5);
}

// Out of descriptors, the server pauses accepting and logs once per interval instead of spinning
// on accept() (the issue saw ~9,000 lines/s at 100% CPU); when descriptors free up it serves again.
TEST(TCPStoreAdmission, AcceptPausesWhenOutOfDescriptors) {
  const std::string log = ::testing::TempDir() + "weft_store_emfile.log";
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    const int f = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    rlimit lim{32, 32};
    if (f < 0 || dup2(f, 2) != 2 || setrlimit(RLIMIT_NOFILE, &lim) != 0) _exit(2);
    try {
      TCPStore server("127.0.0.1", 0, -1, true, kLong);
      const uint16_t port = server.port();
      if (write(p[1], &port, sizeof port) != sizeof port) _exit(1);
      pause();
    } catch (...) {
    }
    _exit(1);
  }
  close(p[1]);
  uint16_t port = 0;
  ASSERT_EQ(read(p[0], &port, sizeof port), static_cast<ssize_t>(sizeof port));
  close(p[0]);
  const auto t0 = Clock::now();
  std::vector<int> fds;
  for (int i = 0; i < 64; ++i) fds.push_back(raw_connect(port));
  // Wait until the server has run out (its log says so), then watch it idle for a while.
  for (;;) {
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    if (ss.str().find("accept failed") != std::string::npos) break;
    ASSERT_LT(ms_since(t0), 120000) << "the server never ran out of descriptors";
    std::this_thread::sleep_for(milliseconds(10));
  }
  // Paused, it waits in poll(): over a second of wall time it uses far less than a second of
  // CPU (a loop retrying accept() would use all of it).
  const double cpu0 = cpu_seconds(pid);
  const auto w0 = Clock::now();
  std::this_thread::sleep_for(milliseconds(1000));
  const double cpu = cpu_seconds(pid) - cpu0, wall = ms_since(w0) / 1000;
  EXPECT_LT(cpu, 0.5 * wall) << "the server spins while out of descriptors";
  for (int fd : fds) close(fd);
  auto c = client(port);
  c->set("k", "v");
  EXPECT_EQ(c->get_string("k"), "v");
  const double seconds = ms_since(t0) / 1000;
  kill(pid, SIGKILL);
  join_child(pid);
  std::ifstream in(log);
  int lines = 0;
  for (std::string line; std::getline(in, line);) lines += line.find("accept failed") != line.npos;
  EXPECT_GE(lines, 1);
  EXPECT_LE(lines, 2 + static_cast<int>(seconds / 10)) << "at most one line per 10 s";
}
