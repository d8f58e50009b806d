// weft's error types and the one family of check macros every layer raises them with.
// Guarantees: a failed check throws weft::Error (a std::runtime_error), or weft::DistError (a
// weft::Error) from distributed code, whose message says what is wrong first, with the caller's
// context (shapes, keys, ranks), and ends with the source location "(file.cpp:123)"; it never
// aborts.
#pragma once

#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>

namespace weft {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Errors from communication (weft::dist, also reachable as weft::dist::DistError): timeouts,
// lost peers, mismatched ranks, bad rendezvous settings.
class DistError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// "<msg> (file.cpp:123)": the message first, the file's base name and line last.
std::string with_location(const char* file, int line, const std::string& msg);

// Throws E (weft::Error or a subclass) carrying msg and the location.
template <typename E = Error>
[[noreturn]] void throw_error(const char* file, int line, const std::string& msg) {
  throw E(with_location(file, line, msg));
}

// The same error as an exception_ptr, for failures handed to other threads (a Work's waiters)
// rather than thrown here.
template <typename E = Error>
std::exception_ptr make_error(const char* file, int line, const std::string& msg) {
  return std::make_exception_ptr(E(with_location(file, line, msg)));
}
}  // namespace detail

}  // namespace weft

// The family: WEFT_CHECK_T(Type, cond, msg...) throws Type unless cond holds; WEFT_ERROR_T(Type,
// msg...) throws it; the message is the arguments streamed together. The short forms below name
// the type: WEFT_CHECK / WEFT_ERROR raise weft::Error, the _DIST ones weft::DistError.
#define WEFT_CHECK_T(Type, cond, ...)                                                             \
  do {                                                                                            \
    if (!(cond)) [[unlikely]]                                                                     \
      ::weft::detail::throw_error<Type>(__FILE__, __LINE__, ::weft::detail::concat(__VA_ARGS__)); \
  } while (0)

#define WEFT_ERROR_T(Type, ...) \
  ::weft::detail::throw_error<Type>(__FILE__, __LINE__, ::weft::detail::concat(__VA_ARGS__))

#define WEFT_CHECK(cond, ...) WEFT_CHECK_T(::weft::Error, cond, __VA_ARGS__)
#define WEFT_ERROR(...) WEFT_ERROR_T(::weft::Error, __VA_ARGS__)

#define WEFT_CHECK_DIST(cond, ...) WEFT_CHECK_T(::weft::DistError, cond, __VA_ARGS__)
#define WEFT_DIST_ERROR(...) WEFT_ERROR_T(::weft::DistError, __VA_ARGS__)
// A DistError as an exception_ptr (see detail::make_error), for a Work to fail with.
#define WEFT_DIST_ERROR_PTR(...)                                    \
  ::weft::detail::make_error<::weft::DistError>(__FILE__, __LINE__, \
                                                ::weft::detail::concat(__VA_ARGS__))
