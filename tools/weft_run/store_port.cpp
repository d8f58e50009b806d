#include "store_port.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "report.h"

namespace weft_run {

namespace {

// Hex of n bytes from the kernel's random source.
std::string random_hex(size_t n) {
  unsigned char b[32] = {};
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || n > sizeof b || read(fd, b, n) != static_cast<ssize_t>(n)) {
    message(std::string("cannot read /dev/urandom: ") + std::strerror(errno));
    std::exit(1);
  }
  close(fd);
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) s += {digits[b[i] >> 4], digits[b[i] & 15]};
  return s;
}

// A listening socket on `a`, or -1 with errno set.
int listen_on(const addrinfo& a) {
  int fd = socket(a.ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, a.ai_addr, a.ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0) return fd;
  int e = errno;
  close(fd);
  errno = e;
  return -1;
}

}  // namespace

int hold_store_port(Options& o) {
  // One node and no port asked for: a free one, so that two jobs on a machine never meet.
  const bool pick = o.standalone || (o.nnodes == 1 && !o.port_given);
  if (pick) o.master_port = 0;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(o.master_port);
  if (getaddrinfo(o.master_addr.c_str(), port.c_str(), &hints, &res) != 0) return -1;
  int fd = -1, in_use = 0;
  for (addrinfo* a = res; a && fd < 0; a = a->ai_next) {
    if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
    fd = listen_on(*a);
    if (fd < 0 && errno == EADDRINUSE) in_use = 1;
  }
  freeaddrinfo(res);
  if (fd < 0 && in_use) {
    message("error: port " + port + " on " + o.master_addr +
            " is in use (by another job?); choose another --master-port, or --standalone for "
            "a free one");
    std::exit(1);
  }
  if (fd >= 0 && pick) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    o.master_port =
        ntohs(ss.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                      : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  }
  if (fd < 0 && pick) {
    message("error: cannot listen on " + o.master_addr + ": " + std::strerror(errno));
    std::exit(1);
  }
  return fd;
}

void choose_job_identity(Options& o) {
  if (o.run_id.empty()) {
    const char* env = std::getenv("WEFT_RUN_ID");
    o.run_id = env && *env ? env : (o.nnodes == 1 ? random_hex(8) : "");
  }
  if (const char* env = std::getenv("WEFT_STORE_TOKEN"); env && *env) {
    o.token = env;
  } else if (o.nnodes == 1) {
    o.token = random_hex(16);
  }
}

}  // namespace weft_run
