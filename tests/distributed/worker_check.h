// The checks of the multi-process test workers (pg_worker, nccl_worker): EXPECT(cond, msg...)
// prints "FAIL: rank R: <cond> <msg>" and ends the process with exit code 1 at once, so that the
// launching test sees which rank failed and why, and no rank waits on a dead peer's collective.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "weft/error.h"

namespace weft::test {

inline int g_rank = 0;  // set by the worker once its rank is known

[[noreturn]] inline void fail(const std::string& why) {
  std::printf("FAIL: rank %d: %s\n", g_rank, why.c_str());
  std::fflush(stdout);
  std::_Exit(1);
}

}  // namespace weft::test

#define EXPECT(cond, ...)                                                                 \
  do {                                                                                    \
    if (!(cond))                                                                          \
      ::weft::test::fail(std::string(#cond) + " " + ::weft::detail::concat(__VA_ARGS__)); \
  } while (0)
