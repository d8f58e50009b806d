#include "weft/error.h"

#include <cstring>

namespace weft::detail {

std::string with_location(const char* file, int line, const std::string& msg) {
  const char* base = std::strrchr(file, '/');
  return msg + " (" + (base ? base + 1 : file) + ":" + std::to_string(line) + ")";
}

}  // namespace weft::detail
