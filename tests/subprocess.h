// Test helper for multi-process tests: locate built executables, pick a free loopback port,
// and run a command with a hard time limit, capturing its output and exit code.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace weft::test {

// The build tree's root (the test binary is <build>/tests/weft_tests).
inline std::string build_dir() {
  return std::filesystem::canonical("/proc/self/exe").parent_path().parent_path().string();
}

inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, (sockaddr*)&a, sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, (sockaddr*)&a, &len);
  int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

// A listening socket on a free loopback port, held by the test for the ranks it starts and
// handed to rank 0 as WEFT_STORE_LISTEN_FD (as weft-run does), so that no test running beside
// this one can take the port between choosing it and rank 0's store binding it. Child processes
// inherit the descriptor; only the one told about it uses it.
class HeldPort {
 public:
  HeldPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, (sockaddr*)&a, sizeof a) != 0 || ::listen(fd_, 128) != 0 ||
        ::getsockname(fd_, (sockaddr*)&a, &len) != 0)
      std::abort();
    port_ = ntohs(a.sin_port);
  }
  ~HeldPort() { ::close(fd_); }
  HeldPort(const HeldPort&) = delete;
  HeldPort& operator=(const HeldPort&) = delete;
  int port() const { return port_; }
  std::string fd() const { return std::to_string(fd_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

struct RunResult {
  int code = -1;  // exit code (124 when the time limit killed it)
  std::string output;
};

// Runs `cmd` through the shell with stderr merged into stdout, killed after `seconds`.
inline RunResult run_command(const std::string& cmd, int seconds = 120) {
  RunResult r;
  std::string full = "timeout -k 5 " + std::to_string(seconds) + " " + cmd + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

inline bool have_mpirun() { return std::system("command -v mpirun >/dev/null 2>&1") == 0; }

}  // namespace weft::test
