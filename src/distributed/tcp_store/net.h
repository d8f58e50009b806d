// Internal to TCPStore's server and client: the socket plumbing both ends share. Addresses print
// as host:port ([v6]:port); a host resolves IPv4 first, so that "localhost" means the same
// address to the server and to its clients whatever the resolver's order.
#pragma once

#include <netdb.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <vector>

namespace weft::dist::detail {

std::string endpoint(const std::string& host, uint16_t port);  // "host:port" or "[v6]:port"
std::string peer_name(const sockaddr_storage& ss);             // the same for an address

// The TCP addresses of host:port (an empty host: every local address), IPv4 first. The
// addresses live in *storage, so the list outlives the resolver's; on failure the list is empty
// and *err says why.
std::vector<addrinfo> resolve(const std::string& host, uint16_t port, std::string* err,
                              std::vector<sockaddr_storage>* storage);

void set_nodelay(int fd);  // small requests and replies go out at once

}  // namespace weft::dist::detail
