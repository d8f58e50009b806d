#include "weft/distributed/error_file.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace weft::dist {

bool record_error(const std::string& message) {
  const char* path = std::getenv("WEFT_ERROR_FILE");
  if (!path || !*path) return false;
  // Whole or not at all: the launcher may read the file the moment this process exits.
  const std::string tmp = std::string(path) + ".tmp." + std::to_string(getpid());
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f) return false;
  const bool written = std::fwrite(message.data(), 1, message.size(), f) == message.size();
  if (std::fclose(f) != 0 || !written || std::rename(tmp.c_str(), path) != 0) {
    std::remove(tmp.c_str());
    return false;
  }
  return true;
}

bool record_error(const std::exception& e) { return record_error(std::string(e.what())); }

}  // namespace weft::dist
