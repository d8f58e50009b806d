// Test helper: the message of the weft::Error that `f` throws, or "no error", so that a test can
// check that bad input is refused with a message naming what was wrong.
#pragma once

#include <functional>
#include <string>

#include "weft/error.h"

namespace weft::test {

inline std::string error_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace weft::test
