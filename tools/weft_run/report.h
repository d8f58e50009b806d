// How weft-run speaks: whole writes that survive EINTR and a vanished reader (so a closed stdout
// never stops supervision), "weft-run: ..." lines on stderr, and signal names for them.
#pragma once

#include <cstddef>
#include <string>

namespace weft_run {

void write_all(int fd, const char* p, size_t n);
void message(const std::string& s);  // "weft-run: <s>\n" on stderr
const char* signal_name(int sig);    // "SIGTERM", ...

}  // namespace weft_run
