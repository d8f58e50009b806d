#include "distributed/tcp_store/net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <algorithm>
#include <cstring>

namespace weft::dist::detail {

std::string endpoint(const std::string& host, uint16_t port) {
  return host.find(':') != std::string::npos ? "[" + host + "]:" + std::to_string(port)
                                             : host + ":" + std::to_string(port);
}

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

}  // namespace weft::dist::detail
