// Rendezvous store tests: TCPStore with clients in threads and in forked processes (counters,
// blocking get, wait timeouts naming keys, compare_set, delete, num_keys, worker registration),
// failure modes (closed port, killed server, malformed bytes on a raw socket), the wire
// protocol's parser, FileStore across processes, and PrefixStore isolation.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "store_test_util.h"
#include "weft/distributed/file_store.h"
#include "weft/distributed/store.h"
#include "weft/distributed/store_protocol.h"
#include "weft/distributed/tcp_store.h"

namespace fs = std::filesystem;
using namespace weft::dist;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

using namespace weft::test::store;

namespace {

fs::path temp_file(const std::string& name) {
  auto p = fs::temp_directory_path() / ("weft_store_" + std::to_string(getpid()) + "_" + name);
  fs::remove(p);
  return p;
}

}  // namespace

// ---- protocol ----

TEST(StoreProtocol, RoundTripsEveryMessageType) {
  using T = proto::MsgType;
  const std::vector<proto::Message> ms = {
      msg(T::kSet, {"k"}, {bytes("v")}),
      msg(T::kGet, {"k"}, {}, 250),
      msg(T::kAdd, {"c"}, {}, -7),
      msg(T::kCompareSet, {"k"}, {bytes("a"), {}}),
      msg(T::kCheck, {"a", "b", ""}),
      msg(T::kDelete, {"k"}),
      msg(T::kWait, {"a", "b"}, {}, 0),
      msg(T::kNumKeys),
      msg(T::kOk),
      msg(T::kValue, {}, {bytes("xyz")}),
      msg(T::kInt, {}, {}, INT64_MIN),
      msg(T::kBool, {}, {}, 1),
      msg(T::kTimeout, {"missing"}),
      msg(T::kHello, {"run-id", "token"}),
  };
  for (const auto& m : ms) {
    const auto b = proto::encode_message(m);
    proto::Message out;
    const auto r = proto::parse_message(b.data(), b.size(), &out);
    ASSERT_EQ(r.status, proto::ParseResult::kOk) << proto::type_name(m.type) << ": " << r.error;
    EXPECT_EQ(r.consumed, b.size());
    EXPECT_EQ(out.type, m.type);
    EXPECT_EQ(out.keys, m.keys);
    EXPECT_EQ(out.values, m.values);
    EXPECT_EQ(out.integer, m.integer);
    // Every strict prefix is an incomplete, not invalid, message.
    for (size_t n = 0; n < b.size(); ++n)
      EXPECT_EQ(proto::parse_message(b.data(), n, nullptr).status, proto::ParseResult::kNeedMore);
  }
}

TEST(StoreProtocol, RejectsMalformedInput) {
  auto status = [](const std::vector<uint8_t>& b) {
    return proto::parse_message(b.data(), b.size(), nullptr);
  };
  EXPECT_EQ(status(bytes("GE")).status, proto::ParseResult::kInvalid);  // bad magic, early
  auto b = proto::encode_message(msg(proto::MsgType::kSet, {"k"}, {bytes("v")}));
  auto bad = b;
  bad[4] = 9;  // version
  EXPECT_NE(status(bad).error.find("version"), std::string::npos);
  bad = b;
  bad[6] = 200;  // type
  EXPECT_NE(status(bad).error.find("unknown message type"), std::string::npos);
  bad = b;
  bad[8] = bad[9] = bad[10] = bad[11] = 0xff;  // huge length: rejected before the payload
  bad.resize(proto::kHeaderSize);
  EXPECT_EQ(status(bad).status, proto::ParseResult::kInvalid);
  bad = b;
  bad.push_back(0);
  bad[8] += 1;  // one trailing payload byte
  EXPECT_NE(status(bad).error.find("trailing"), std::string::npos);
  bad = b;
  bad[12] = 0xff;  // key length overruns the payload
  EXPECT_EQ(status(bad).status, proto::ParseResult::kInvalid);
  EXPECT_THROW(proto::encode_message(
                   msg(proto::MsgType::kSet, {std::string(proto::kMaxKeySize + 1, 'k')}, {{}})),
               weft::Error);
  auto g = proto::encode_message(msg(proto::MsgType::kGet, {"k"}, {}, 5));
  g[g.size() - 1] = 0x80;  // negative timeout
  EXPECT_NE(status(g).error.find("timeout"), std::string::npos);
}

// ---- TCPStore ----

TEST(TCPStore, BasicOperations) {
  // Nothing here is meant to time out: the long timeout, so a busy machine (or TSan) cannot
  // turn a slow reply into a failure.
  TCPStore server("127.0.0.1", 0, -1, true, kLong);
  ASSERT_NE(server.port(), 0);
  TCPStore client("127.0.0.1", server.port(), -1, false, kLong);
  client.set("a", "1");
  EXPECT_EQ(server.get_string("a"), "1");
  EXPECT_EQ(client.add("n", 5), 5);
  EXPECT_EQ(server.add("n", -2), 3);
  EXPECT_EQ(client.get_string("n"), "3");  // decimal string, as PyTorch
  expect_dist_error([&] { client.add("a2", 0), client.set("a2", "x"), client.add("a2", 1); },
                    {"not an integer", "a2"});
  // compare_set: absent + empty expected sets; mismatch returns the current value.
  EXPECT_EQ(client.compare_set("cs", {}, bytes("x")), bytes("x"));
  EXPECT_EQ(client.compare_set("cs", bytes("nope"), bytes("y")), bytes("x"));
  EXPECT_EQ(client.compare_set("cs", bytes("x"), bytes("y")), bytes("y"));
  EXPECT_EQ(client.compare_set("absent", bytes("e"), bytes("d")), bytes("e"));
  EXPECT_FALSE(client.check({"absent"}));
  EXPECT_TRUE(client.check({"a", "n", "cs"}));
  EXPECT_FALSE(client.check({"a", "zzz"}));
  EXPECT_EQ(client.num_keys(), 4);  // a, n, a2, cs
  EXPECT_TRUE(client.delete_key("a"));
  EXPECT_FALSE(client.delete_key("a"));
  EXPECT_FALSE(server.check({"a"}));
  EXPECT_EQ(server.num_keys(), 3);
  std::vector<uint8_t> big(3 << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 31);
  client.set("big", big);
  EXPECT_EQ(server.get("big"), big);
  client.set("empty", std::vector<uint8_t>{});
  EXPECT_TRUE(client.get("empty").empty());
}

TEST(TCPStore, CountersFromManyThreadClients) {
  TCPStore server("127.0.0.1", 0, -1, true, kLong);
  constexpr int kThreads = 8, kAdds = 100;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      TCPStore c("127.0.0.1", server.port(), -1, false, kLong);
      for (int i = 0; i < kAdds; ++i) c.add("counter", 1);
      c.set("done/" + std::to_string(t), "ok");
    });
  std::vector<std::string> done;
  for (int t = 0; t < kThreads; ++t) done.push_back("done/" + std::to_string(t));
  server.wait(done);
  for (auto& t : ts) t.join();
  EXPECT_EQ(server.add("counter", 0), kThreads * kAdds);
}

TEST(TCPStore, CountersFromForkedProcesses) {
  TCPStore server("127.0.0.1", 0, -1, true, kLong);
  const uint16_t port = server.port();
  constexpr int kProcs = 4, kAdds = 50;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p)
    pids.push_back(fork_child([port, p] {
      TCPStore c("127.0.0.1", port, -1, false, kLong);
      for (int i = 0; i < kAdds; ++i) c.add("counter", 1);
      c.set("rank/" + std::to_string(p), std::to_string(getpid()));
      // Every process sees every other's key: a barrier through the store.
      for (int q = 0; q < kProcs; ++q) c.get("rank/" + std::to_string(q));
    }));
  for (auto pid : pids) EXPECT_EQ(join_child(pid), 0);
  EXPECT_EQ(server.add("counter", 0), kProcs * kAdds);
  EXPECT_EQ(server.num_keys(), 1 + kProcs);
}

TEST(TCPStore, GetBlocksUntilSet) {
  TCPStore server("127.0.0.1", 0, -1, true, kLong);
  TCPStore client("127.0.0.1", server.port(), -1, false, kLong);
  std::vector<uint8_t> got;
  const auto t0 = Clock::now();
  std::thread reader([&] { got = client.get("late"); });
  std::this_thread::sleep_for(milliseconds(100));
  server.set("late", "here");
  reader.join();
  EXPECT_EQ(got, bytes("here"));
  EXPECT_GE(ms_since(t0), 90);
  // wait() on several keys returns once the last one is set.
  std::thread waiter([&] { client.wait({"w1", "w2"}); });
  server.set("w1", "1");
  std::this_thread::sleep_for(milliseconds(20));
  server.set("w2", "2");
  waiter.join();
}

TEST(TCPStore, WaitAndGetTimeOutNamingTheKey) {
  TCPStore server("127.0.0.1", 0, -1, true, kShort);
  TCPStore client("127.0.0.1", server.port(), -1, false, kShort);
  client.set("present", "1");
  auto t0 = Clock::now();
  expect_dist_error(
      [&] {
        client.wait({"present", "missing_key"});
      },
      {"missing_key", "timed out", "127.0.0.1:" + std::to_string(server.port())});
  EXPECT_GE(ms_since(t0), 190);  // not before its timeout
  expect_dist_error([&] { client.get("nobody_sets_this"); }, {"nobody_sets_this", "timed out"});
  expect_dist_error([&] { client.wait({"x"}, milliseconds(50)); }, {"'x'"});
  // The connection stays usable after a timeout.
  EXPECT_EQ(client.get_string("present"), "1");
}

TEST(TCPStore, ConnectToClosedPortFailsAfterTimeout) {
  const uint16_t port = free_port();
  const auto t0 = Clock::now();
  expect_dist_error([&] { TCPStore c("127.0.0.1", port, -1, false, kShort); },
                    {"127.0.0.1:" + std::to_string(port), "could not connect"});
  EXPECT_GE(ms_since(t0), 190);
}

TEST(TCPStore, ClientMayStartBeforeServer) {
  const uint16_t port = free_port();
  std::string got;
  std::thread client([&] {
    TCPStore c("127.0.0.1", port, -1, false, kLong);
    got = c.get_string("hello");
  });
  std::this_thread::sleep_for(milliseconds(100));
  TCPStore server("127.0.0.1", port, -1, true, kLong);
  server.set("hello", "world");
  client.join();
  EXPECT_EQ(got, "world");
}

TEST(TCPStore, WaitsForWorkers) {
  const uint16_t port = free_port();
  std::vector<std::thread> ts;
  for (int i = 0; i < 2; ++i)
    ts.emplace_back([port] { TCPStore c("127.0.0.1", port, 3, false, kLong); });
  TCPStore server("127.0.0.1", port, 3, true, kLong);  // returns once all 3 joined
  for (auto& t : ts) t.join();
  EXPECT_EQ(server.num_keys(), 0);  // registration keys are internal
  expect_dist_error([] { TCPStore s("127.0.0.1", 0, 2, true, kShort); },
                    {"only 1 of 2 workers joined"});
}

TEST(TCPStore, KilledServerMakesClientsFail) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    try {
      TCPStore server("127.0.0.1", 0, -1, true, kLong);
      const uint16_t port = server.port();
      if (write(p[1], &port, sizeof(port)) != sizeof(port)) _exit(1);
      pause();
    } catch (...) {
    }
    _exit(1);
  }
  close(p[1]);
  uint16_t port = 0;
  ASSERT_EQ(read(p[0], &port, sizeof(port)), static_cast<ssize_t>(sizeof(port)));
  close(p[0]);
  TCPStore client("127.0.0.1", port, -1, false, kDay);
  client.set("k", "v");
  EXPECT_EQ(client.get_string("k"), "v");
  // A get parked on the server fails when the server dies: its own timeout is a day, so failing
  // at all is the proof.
  std::thread killer([pid] {
    std::this_thread::sleep_for(milliseconds(100));
    kill(pid, SIGKILL);
  });
  expect_dist_error([&] { client.get("never"); },
                    {"127.0.0.1:" + std::to_string(port), "never", "server died"});
  killer.join();
  join_child(pid);
  expect_dist_error([&] { client.set("k", "v2"); }, {"127.0.0.1:" + std::to_string(port)});
}

TEST(TCPStore, MalformedBytesCloseOnlyThatConnection) {
  TCPStore server("127.0.0.1", 0, -1, true, kLong);
  TCPStore good("127.0.0.1", server.port(), -1, false, kLong);
  good.set("keep", "me");
  std::vector<std::vector<uint8_t>> attacks;
  attacks.push_back(bytes("GET / HTTP/1.1\r\n\r\n"));
  auto set = proto::encode_message(msg(proto::MsgType::kSet, {"evil"}, {bytes("v")}));
  auto a = set;
  a[8] = a[9] = a[10] = a[11] = 0xff;  // 4 GiB payload claimed
  attacks.push_back(a);
  a = set;
  a[12] = 0xf0;  // key length past the payload
  attacks.push_back(a);
  a = set;
  a.push_back(7);
  a[8] += 1;  // trailing byte
  attacks.push_back(a);
  attacks.push_back(proto::encode_message(msg(proto::MsgType::kOk)));  // a reply as a request
  for (size_t i = 0; i < attacks.size(); ++i) {
    const int fd = raw_connect(server.port());
    ASSERT_EQ(send(fd, attacks[i].data(), attacks[i].size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(attacks[i].size()));
    const auto [reply, closed] = raw_read(fd, 120000);
    EXPECT_TRUE(closed) << "attack " << i;
    EXPECT_TRUE(reply.empty()) << "attack " << i;
    close(fd);
  }
  EXPECT_EQ(good.get_string("keep"), "me");
  EXPECT_FALSE(good.check({"evil"}));
  EXPECT_EQ(good.num_keys(), 1);
  // A client that connects and vanishes mid-message is harmless too.
  const int fd = raw_connect(server.port());
  ASSERT_EQ(send(fd, set.data(), 5, MSG_NOSIGNAL), 5);
  close(fd);
  EXPECT_EQ(good.add("c", 1), 1);
}

TEST(TCPStore, PipelinedRequestsAreAnsweredInOrder) {
  TCPStore server("127.0.0.1", 0, -1, true, kLong);
  const int fd = raw_connect(server.port());
  auto req = proto::encode_message(msg(proto::MsgType::kGet, {"later"}, {}, 2000));
  auto set = proto::encode_message(msg(proto::MsgType::kSet, {"mine"}, {bytes("1")}));
  req.insert(req.end(), set.begin(), set.end());
  ASSERT_EQ(send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_FALSE(server.check({"mine"}));  // held behind the parked get
  server.set("later", "x");
  // Both replies, however slowly they come.
  std::vector<uint8_t> got;
  while (got.size() < 2 * proto::kHeaderSize || !replies_complete(got, 2)) {
    pollfd p{fd, POLLIN, 0};
    ASSERT_GT(poll(&p, 1, 120000), 0) << "no reply within 120 s";
    uint8_t buf[4096];
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    ASSERT_GT(n, 0) << "the server closed the connection";
    got.insert(got.end(), buf, buf + n);
  }
  close(fd);
  proto::Message m1, m2;
  auto r1 = proto::parse_message(got.data(), got.size(), &m1);
  ASSERT_EQ(r1.status, proto::ParseResult::kOk);
  auto r2 = proto::parse_message(got.data() + r1.consumed, got.size() - r1.consumed, &m2);
  ASSERT_EQ(r2.status, proto::ParseResult::kOk);
  EXPECT_EQ(m1.type, proto::MsgType::kValue);
  EXPECT_EQ(m1.values.at(0), bytes("x"));
  EXPECT_EQ(m2.type, proto::MsgType::kOk);
  EXPECT_TRUE(server.check({"mine"}));
}

// ---- FileStore ----

TEST(FileStore, BasicOperationsAndTimeout) {
  const auto path = temp_file("basic");
  FileStore a(path.string(), -1, kShort);
  FileStore b(path.string(), -1, kShort);
  a.set("k", "v");
  EXPECT_EQ(b.get_string("k"), "v");
  EXPECT_EQ(a.add("n", 2), 2);
  EXPECT_EQ(b.add("n", 3), 5);
  EXPECT_EQ(b.compare_set("cs", {}, bytes("x")), bytes("x"));
  EXPECT_EQ(a.compare_set("cs", bytes("q"), bytes("y")), bytes("x"));
  EXPECT_EQ(a.compare_set("cs", bytes("x"), bytes("y")), bytes("y"));
  EXPECT_TRUE(b.check({"k", "n", "cs"}));
  EXPECT_EQ(b.num_keys(), 3);
  EXPECT_TRUE(a.delete_key("k"));
  EXPECT_FALSE(b.delete_key("k"));
  EXPECT_FALSE(b.check({"k"}));
  EXPECT_EQ(a.num_keys(), 2);
  const auto t0 = Clock::now();
  expect_dist_error([&] { b.get("missing_file_key"); },
                    {"missing_file_key", path.string(), "timed out"});
  EXPECT_GE(ms_since(t0), 190);
  fs::remove(path);
}

TEST(FileStore, ForkedProcessesShareCountersAndCleanUp) {
  const auto path = temp_file("forked");
  constexpr int kProcs = 4, kAdds = 25;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p)
    pids.push_back(fork_child([&path, p] {
      FileStore s(path.string(), kProcs + 1, kLong);
      for (int i = 0; i < kAdds; ++i) s.add("counter", 1);
      s.set("rank/" + std::to_string(p), "ok");
      s.wait({"go"});  // set by the parent after it has seen everyone
    }));
  {
    FileStore s(path.string(), kProcs + 1, kLong);
    std::vector<std::string> ranks;
    for (int p = 0; p < kProcs; ++p) ranks.push_back("rank/" + std::to_string(p));
    s.wait(ranks);
    EXPECT_EQ(s.add("counter", 0), kProcs * kAdds);
    s.set("go", "1");
    for (auto pid : pids) EXPECT_EQ(join_child(pid), 0);
    EXPECT_TRUE(fs::exists(path));
  }
  EXPECT_FALSE(fs::exists(path));  // the last of world_size instances removed it
}

TEST(FileStore, CorruptFileIsReportedNotTrusted) {
  const auto path = temp_file("corrupt");
  {
    FILE* f = std::fopen(path.c_str(), "wb");
    std::fputs("S\xff\xff\xff\x7fjunk", f);
    std::fclose(f);
  }
  expect_dist_error(
      [&] {
        FileStore s(path.string(), -1, kShort);
        s.check({"x"});
      },
      {"corrupt", path.string()});
  fs::remove(path);
}

// ---- PrefixStore ----

TEST(PrefixStore, IsolatesGroupsSharingAStore) {
  auto base = std::make_shared<TCPStore>("127.0.0.1", 0, -1, true, kShort);
  PrefixStore a("group_a", base), b("group_b", base);
  a.set("key", "from_a");
  b.set("key", "from_b");
  EXPECT_EQ(a.get_string("key"), "from_a");
  EXPECT_EQ(b.get_string("key"), "from_b");
  EXPECT_EQ(a.add("n", 1), 1);
  EXPECT_EQ(b.add("n", 10), 10);
  a.set("only_a", "1");
  EXPECT_TRUE(a.check({"only_a"}));
  EXPECT_FALSE(b.check({"only_a"}));
  expect_dist_error([&] { b.wait({"only_a"}); }, {"group_b/only_a"});
  EXPECT_TRUE(b.delete_key("key"));
  EXPECT_EQ(a.get_string("key"), "from_a");
  auto fpath = temp_file("prefix");
  auto fbase = std::make_shared<FileStore>(fpath.string(), -1, kShort);
  PrefixStore fa("x", fbase), fb("y", fbase);
  fa.set("k", "1");
  EXPECT_FALSE(fb.check({"k"}));
  fs::remove(fpath);
}
