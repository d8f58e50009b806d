#include "weft/distributed/debug.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>

#include "weft/error.h"

namespace weft::dist {

namespace {

// -1 until read or set; then the level. A bad value is not cached: every call names it.
std::atomic<int> g_level{-1};

DebugLevel parse_level(const char* v) {
  std::string s = v ? v : "";
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  if (s.empty() || s == "OFF") return DebugLevel::OFF;
  if (s == "INFO") return DebugLevel::INFO;
  if (s == "DETAIL") return DebugLevel::DETAIL;
  WEFT_DIST_ERROR("WEFT_DISTRIBUTED_DEBUG='", v, "' is not a debug level (OFF, INFO or DETAIL)");
}

}  // namespace

DebugLevel get_debug_level() {
  const int level = g_level.load(std::memory_order_acquire);
  if (level >= 0) return static_cast<DebugLevel>(level);
  const DebugLevel parsed = parse_level(std::getenv("WEFT_DISTRIBUTED_DEBUG"));
  int expected = -1;
  g_level.compare_exchange_strong(expected, static_cast<int>(parsed));  // a racing set() wins
  return static_cast<DebugLevel>(g_level.load(std::memory_order_acquire));
}

void set_debug_level(DebugLevel level) {
  g_level.store(static_cast<int>(level), std::memory_order_release);
}

std::string to_string(DebugLevel level) {
  switch (level) {
    case DebugLevel::OFF:
      return "OFF";
    case DebugLevel::INFO:
      return "INFO";
    case DebugLevel::DETAIL:
      return "DETAIL";
  }
  return "?";
}

}  // namespace weft::dist
