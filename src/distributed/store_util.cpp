#include "distributed/store_util.h"

#include <charconv>
#include <cstdio>
#include <cstring>

namespace weft::dist::detail {

std::string errno_str(int e) { return std::strerror(e); }

std::string describe_keys(const std::vector<std::string>& keys) {
  std::string s = "[";
  for (size_t i = 0; i < keys.size(); ++i) s += (i ? ", '" : "'") + keys[i] + "'";
  return s + "]";
}

bool parse_int(const std::vector<uint8_t>& v, int64_t* out) {
  const char* b = reinterpret_cast<const char*>(v.data());
  const auto [p, ec] = std::from_chars(b, b + v.size(), *out);
  return ec == std::errc() && p == b + v.size() && !v.empty();
}

std::vector<uint8_t> int_bytes(int64_t v) {
  const std::string s = std::to_string(v);
  return {s.begin(), s.end()};
}

std::chrono::milliseconds progress_interval(std::chrono::milliseconds timeout) {
  return std::clamp(timeout / 3, std::chrono::milliseconds(100), std::chrono::milliseconds(10000));
}

void report_waiting(const std::string& who, const std::string& what,
                    std::chrono::steady_clock::duration waited, std::chrono::milliseconds timeout) {
  using std::chrono::duration_cast;
  using std::chrono::seconds;
  std::fprintf(stderr, "[weft] %s: waiting %s, %lld s of %lld s\n", who.c_str(), what.c_str(),
               static_cast<long long>(duration_cast<seconds>(waited).count()),
               static_cast<long long>(duration_cast<seconds>(timeout).count()));
}

}  // namespace weft::dist::detail
