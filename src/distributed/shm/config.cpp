#include "distributed/shm/config.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "weft/error.h"

namespace weft::dist::shm {

bool enabled_by_env() {
  const char* v = std::getenv("WEFT_SHM");
  const std::string s = v ? v : "";
  WEFT_CHECK_DIST(s.empty() || s == "0" || s == "1", "WEFT_SHM='", s,
                  "' is not 0 or 1 (0 turns the shared-memory all-reduce off)");
  return s != "0";
}

std::string host_id() {
  if (const char* v = std::getenv("WEFT_SHM_HOST_ID"); v && *v) return v;
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) name[0] = '\0';
  std::string boot;
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::getline(f, boot);
  return std::string(name) + "/" + boot;
}

size_t chunk_bytes() {
  const char* v = std::getenv("WEFT_SHM_CHUNK_BYTES");
  if (!v || !*v) return kDefaultChunkBytes;
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  WEFT_CHECK_DIST(*end == '\0' && n >= 64 && n <= (1LL << 30), "WEFT_SHM_CHUNK_BYTES='", v,
                  "' is not a byte count in [64, 2^30]");
  return (static_cast<size_t>(n) + 63) / 64 * 64;
}

Settings settings_from_env() { return Settings{enabled_by_env(), chunk_bytes()}; }

}  // namespace weft::dist::shm
