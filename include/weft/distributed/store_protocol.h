// Wire format of TCPStore: a fixed 12-byte header (magic "WFST", version, message type, payload
// length, all little-endian) followed by length-prefixed fields. parse_message() is a pure
// function over bytes (fuzzed by fuzz/fuzz_store_protocol.cpp): it accepts only known types,
// fields within the hard limits below and payloads consumed exactly; anything else is kInvalid
// with a reason, never a crash, and it rejects an oversized header before the payload arrives.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace weft::dist::proto {

inline constexpr uint32_t kMagic = 0x54534657;  // "WFST" read as little-endian bytes
inline constexpr uint16_t kVersion = 1;
inline constexpr size_t kHeaderSize = 12;  // magic u32, version u16, type u16, length u32
inline constexpr size_t kMaxKeySize = 4096;
inline constexpr size_t kMaxValueSize = size_t{64} << 20;
inline constexpr size_t kMaxKeys = 4096;  // keys in one check/wait request
inline constexpr size_t kMaxErrorSize = 4096;
// A waiting request's timeout is bounded so deadline arithmetic cannot overflow (~30 days).
inline constexpr int64_t kMaxTimeoutMs = int64_t{30} * 24 * 3600 * 1000;

enum class MsgType : uint16_t {
  // Requests (client -> server).
  kSet = 1,         // key, value
  kGet = 2,         // key, timeout_ms (waits for the key)
  kAdd = 3,         // key, delta
  kCompareSet = 4,  // key, expected, desired
  kCheck = 5,       // keys
  kDelete = 6,      // key
  kWait = 7,        // keys, timeout_ms
  kNumKeys = 8,     // (empty)
  kHello = 9,       // keys {run id, token}: a connection's first message (Note [Store admission])
  // Responses (server -> client).
  kOk = 64,       // (empty)
  kValue = 65,    // value
  kInt = 66,      // integer
  kBool = 67,     // integer, 0 or 1, one byte on the wire
  kTimeout = 68,  // keys still missing at the deadline
  kError = 69,    // text (a semantic error such as add on a non-integer value)
};

bool is_request(MsgType t);
const char* type_name(MsgType t);

// One decoded message; which fields are meaningful depends on `type` (see MsgType).
struct Message {
  MsgType type = MsgType::kOk;
  std::vector<std::string> keys;
  std::vector<std::vector<uint8_t>> values;  // value; or expected, desired
  int64_t integer = 0;                       // delta, timeout_ms, int or bool result
  std::string text;                          // kError's message
};

struct ParseResult {
  enum Status { kOk, kNeedMore, kInvalid };
  Status status = kNeedMore;
  size_t consumed = 0;  // kOk: bytes of the message (header + payload)
  std::string error;    // kInvalid: why
};

// Parses the first message in data[0, size). kNeedMore when the bytes are a valid prefix (a
// complete, valid header whose payload has not fully arrived counts as that).
ParseResult parse_message(const uint8_t* data, size_t size, Message* out);

// Encodes a message; throws weft::Error if it breaks the limits parse_message enforces.
std::vector<uint8_t> encode_message(const Message& m);

}  // namespace weft::dist::proto
