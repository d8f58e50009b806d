// libFuzzer target for the TCPStore wire-protocol parser (weft/distributed/store_protocol.h). Any
// input must parse, ask for more bytes, or be rejected with a reason; a parsed message must
// re-encode to exactly the bytes it came from, and no strict prefix of it may be accepted. The
// input is treated as a stream, as the server does. Anything else (exception, sanitizer report) is
// a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "weft/distributed/store_protocol.h"

namespace proto = weft::dist::proto;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t pos = 0;
  while (pos < size) {
    proto::Message m;
    const auto r = proto::parse_message(data + pos, size - pos, &m);
    if (r.status == proto::ParseResult::kInvalid) {
      if (r.error.empty()) std::abort();
      return 0;
    }
    if (r.status == proto::ParseResult::kNeedMore) return 0;
    if (r.consumed < proto::kHeaderSize || r.consumed > size - pos) std::abort();
    // Differential check: encode(parse(bytes)) == bytes, since every field is canonical.
    const auto again = proto::encode_message(m);
    if (again.size() != r.consumed || std::memcmp(again.data(), data + pos, r.consumed) != 0)
      std::abort();
    // A message is recognised only once complete.
    if (proto::parse_message(data + pos, r.consumed - 1, nullptr).status == proto::ParseResult::kOk)
      std::abort();
    pos += r.consumed;
  }
  return 0;
}
