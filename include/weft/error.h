// weft's one error type and the WEFT_CHECK macro every layer raises it with.
// Guarantees: a failed check throws weft::Error (a std::runtime_error) whose message
// names the file:line and the caller's context (shapes, keys, ranks); it never aborts.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace weft {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] void throw_error(const char* file, int line, const std::string& msg);
}  // namespace detail

}  // namespace weft

#define WEFT_CHECK(cond, ...)                                                               \
  do {                                                                                      \
    if (!(cond)) [[unlikely]]                                                               \
      ::weft::detail::throw_error(__FILE__, __LINE__, ::weft::detail::concat(__VA_ARGS__)); \
  } while (0)

#define WEFT_ERROR(...) \
  ::weft::detail::throw_error(__FILE__, __LINE__, ::weft::detail::concat(__VA_ARGS__))
