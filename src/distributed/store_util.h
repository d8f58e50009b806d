// Internal to the stores (FileStore, TCPStore): what both do the same way. Their bookkeeping keys
// share one prefix and are left out of num_keys(); values that add() touches are decimal strings,
// as in PyTorch (get() after add() returns "42"); messages list keys as ['a', 'b'].
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace weft::dist::detail {

inline constexpr const char* kInternalPrefix = "__weft_store__/";

std::string errno_str(int e);  // strerror(e)
std::string describe_keys(const std::vector<std::string>& keys);
// The value as a decimal int64; false unless the whole value is one.
bool parse_int(const std::vector<uint8_t>& v, int64_t* out);
std::vector<uint8_t> int_bytes(int64_t v);

// Rendezvous progress: how often a waiting rank says what it waits for (~10 s, or three times
// within a shorter timeout), and the line it prints to stderr:
// "[weft] rank 1: waiting for the store at 127.0.0.2:29555 (connection refused), 20 s of 1800 s".
std::chrono::milliseconds progress_interval(std::chrono::milliseconds timeout);
void report_waiting(const std::string& who, const std::string& what,
                    std::chrono::steady_clock::duration waited, std::chrono::milliseconds timeout);

// Keys of a key -> value map other than the store's own bookkeeping ones.
template <typename Map>
int64_t count_user_keys(const Map& kv) {
  const std::string prefix = kInternalPrefix;
  return static_cast<int64_t>(std::count_if(kv.begin(), kv.end(), [&](const auto& entry) {
    return entry.first.compare(0, prefix.size(), prefix) != 0;
  }));
}

}  // namespace weft::dist::detail
