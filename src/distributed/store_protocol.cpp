#include "weft/distributed/store_protocol.h"

#include <algorithm>
#include <cstring>

#include "weft/error.h"

namespace weft::dist::proto {

namespace {

constexpr size_t kKeyField = 4 + kMaxKeySize;
constexpr size_t kValueField = 4 + kMaxValueSize;
constexpr size_t kKeysField = 4 + kMaxKeys * kKeyField;

bool known_type(uint16_t t) {
  return (t >= static_cast<uint16_t>(MsgType::kSet) &&
          t <= static_cast<uint16_t>(MsgType::kHello)) ||
         (t >= static_cast<uint16_t>(MsgType::kOk) && t <= static_cast<uint16_t>(MsgType::kError));
}

// The largest payload a well-formed message of this type can have; checked against the header's
// length so a bogus length is rejected before we buffer (up to) that many bytes.
size_t max_payload(MsgType t) {
  switch (t) {
    case MsgType::kSet:
      return kKeyField + kValueField;
    case MsgType::kGet:
      return kKeyField + 8;
    case MsgType::kAdd:
      return kKeyField + 8;
    case MsgType::kCompareSet:
      return kKeyField + 2 * kValueField;
    case MsgType::kCheck:
      return kKeysField;
    case MsgType::kDelete:
      return kKeyField;
    case MsgType::kWait:
      return kKeysField + 8;
    case MsgType::kNumKeys:
      return 0;
    case MsgType::kHello:
      return 4 + 2 * kKeyField;
    case MsgType::kOk:
      return 0;
    case MsgType::kValue:
      return kValueField;
    case MsgType::kInt:
      return 8;
    case MsgType::kBool:
      return 1;
    case MsgType::kTimeout:
      return kKeysField;
    case MsgType::kError:
      return 4 + kMaxErrorSize;
  }
  return 0;
}

uint32_t load_u32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
uint64_t load_u64(const uint8_t* p) {
  return uint64_t{load_u32(p)} | uint64_t{load_u32(p + 4)} << 32;
}

// Bounds-checked cursor over one payload; every read reports failure instead of overrunning.
class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  size_t left() const { return n_ - pos_; }
  bool u8(uint8_t* v) {
    if (left() < 1) return fail("truncated u8");
    *v = p_[pos_++];
    return true;
  }
  bool u32(uint32_t* v) {
    if (left() < 4) return fail("truncated u32");
    *v = load_u32(p_ + pos_);
    pos_ += 4;
    return true;
  }
  bool i64(int64_t* v) {
    if (left() < 8) return fail("truncated i64");
    *v = static_cast<int64_t>(load_u64(p_ + pos_));
    pos_ += 8;
    return true;
  }
  bool bytes(size_t limit, const char* what, std::string* s) {
    uint32_t len = 0;
    if (!u32(&len)) return false;
    if (len > limit) return fail(detail::concat(what, " of ", len, " bytes exceeds limit ", limit));
    if (len > left()) return fail(detail::concat(what, " length ", len, " overruns payload"));
    s->assign(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    return true;
  }
  bool value(std::vector<uint8_t>* v) {
    uint32_t len = 0;
    if (!u32(&len)) return false;
    if (len > kMaxValueSize) return fail(detail::concat("value of ", len, " bytes exceeds limit"));
    if (len > left()) return fail(detail::concat("value length ", len, " overruns payload"));
    v->assign(p_ + pos_, p_ + pos_ + len);
    pos_ += len;
    return true;
  }
  bool keys(std::vector<std::string>* ks) {
    uint32_t n = 0;
    if (!u32(&n)) return false;
    if (n > kMaxKeys) return fail(detail::concat("key count ", n, " exceeds limit ", kMaxKeys));
    if (size_t{n} * 4 > left()) return fail(detail::concat("key count ", n, " overruns payload"));
    ks->resize(n);
    for (auto& k : *ks)
      if (!bytes(kMaxKeySize, "key", &k)) return false;
    return true;
  }
  bool timeout(int64_t* v) {
    if (!i64(v)) return false;
    if (*v < 0 || *v > kMaxTimeoutMs)
      return fail(detail::concat("timeout ", *v, " ms out of range"));
    return true;
  }
  bool fail(std::string why) {
    if (error.empty()) error = std::move(why);
    return false;
  }
  std::string error;

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
};

bool parse_payload(MsgType t, Reader& r, Message* m) {
  m->keys.clear();
  m->values.clear();
  m->integer = 0;
  m->text.clear();
  auto key = [&] {
    m->keys.resize(1);
    return r.bytes(kMaxKeySize, "key", &m->keys[0]);
  };
  auto value = [&] {
    m->values.emplace_back();
    return r.value(&m->values.back());
  };
  switch (t) {
    case MsgType::kSet:
      return key() && value();
    case MsgType::kGet:
      return key() && r.timeout(&m->integer);
    case MsgType::kAdd:
      return key() && r.i64(&m->integer);
    case MsgType::kCompareSet:
      return key() && value() && value();
    case MsgType::kCheck:
      return r.keys(&m->keys);
    case MsgType::kDelete:
      return key();
    case MsgType::kWait:
      return r.keys(&m->keys) && r.timeout(&m->integer);
    case MsgType::kNumKeys:
      return true;
    case MsgType::kHello:
      if (!r.keys(&m->keys)) return false;
      if (m->keys.size() != 2)
        return r.fail(detail::concat("HELLO carries ", m->keys.size(), " fields, expected 2"));
      return true;
    case MsgType::kOk:
      return true;
    case MsgType::kValue:
      return value();
    case MsgType::kInt:
      return r.i64(&m->integer);
    case MsgType::kBool: {
      uint8_t b = 0;
      if (!r.u8(&b)) return false;
      if (b > 1) return r.fail(detail::concat("bool byte ", int{b}, " is not 0 or 1"));
      m->integer = b;
      return true;
    }
    case MsgType::kTimeout:
      return r.keys(&m->keys);
    case MsgType::kError:
      return r.bytes(kMaxErrorSize, "error text", &m->text);
  }
  return r.fail("unknown type");
}

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_u64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
  put_u32(out, static_cast<uint32_t>(n));
  const auto* b = static_cast<const uint8_t*>(p);
  out.insert(out.end(), b, b + n);
}

}  // namespace

bool is_request(MsgType t) {
  return static_cast<uint16_t>(t) >= static_cast<uint16_t>(MsgType::kSet) &&
         static_cast<uint16_t>(t) <= static_cast<uint16_t>(MsgType::kHello);
}

const char* type_name(MsgType t) {
  switch (t) {
    case MsgType::kSet:
      return "SET";
    case MsgType::kGet:
      return "GET";
    case MsgType::kAdd:
      return "ADD";
    case MsgType::kCompareSet:
      return "COMPARE_SET";
    case MsgType::kCheck:
      return "CHECK";
    case MsgType::kDelete:
      return "DELETE";
    case MsgType::kWait:
      return "WAIT";
    case MsgType::kNumKeys:
      return "NUM_KEYS";
    case MsgType::kHello:
      return "HELLO";
    case MsgType::kOk:
      return "OK";
    case MsgType::kValue:
      return "VALUE";
    case MsgType::kInt:
      return "INT";
    case MsgType::kBool:
      return "BOOL";
    case MsgType::kTimeout:
      return "TIMEOUT";
    case MsgType::kError:
      return "ERROR";
  }
  return "UNKNOWN";
}

ParseResult parse_message(const uint8_t* data, size_t size, Message* out) {
  ParseResult res;
  auto invalid = [&](std::string why) {
    res.status = ParseResult::kInvalid;
    res.error = std::move(why);
    return res;
  };
  // Check what we can of the header as soon as its bytes arrive, so garbage is rejected early.
  static const uint8_t magic[4] = {'W', 'F', 'S', 'T'};
  for (size_t i = 0; i < 4 && i < size; ++i)
    if (data[i] != magic[i]) return invalid("bad magic (not a weft store message)");
  if (size < kHeaderSize) return res;
  const uint16_t version = load_u16(data + 4);
  if (version != kVersion)
    return invalid(detail::concat("protocol version ", version, ", expected ", kVersion));
  const uint16_t type = load_u16(data + 6);
  if (!known_type(type)) return invalid(detail::concat("unknown message type ", type));
  const auto t = static_cast<MsgType>(type);
  const size_t len = load_u32(data + 8);
  if (len > max_payload(t))
    return invalid(
        detail::concat(type_name(t), " payload of ", len, " bytes exceeds limit ", max_payload(t)));
  if (size - kHeaderSize < len) return res;
  Reader r(data + kHeaderSize, len);
  Message m;
  m.type = t;
  if (!parse_payload(t, r, &m)) return invalid(detail::concat(type_name(t), ": ", r.error));
  if (r.left() != 0)
    return invalid(detail::concat(type_name(t), ": ", r.left(), " trailing payload bytes"));
  if (out) *out = std::move(m);
  res.status = ParseResult::kOk;
  res.consumed = kHeaderSize + len;
  return res;
}

namespace {

// Appends m's payload (its fields for its type) to out, refusing field counts and values the
// type does not take.
void encode_payload(const Message& m, std::vector<uint8_t>& out) {
  const auto t = m.type;
  auto need_keys = [&](size_t lo, size_t hi) {
    WEFT_CHECK(m.keys.size() >= lo && m.keys.size() <= hi, "store ", type_name(t), ": ",
               m.keys.size(), " keys (limit ", hi, ")");
  };
  auto need_values = [&](size_t n) {
    WEFT_CHECK(m.values.size() == n, "store ", type_name(t), ": expects ", n, " values");
  };
  auto key = [&] { put_bytes(out, m.keys[0].data(), m.keys[0].size()); };
  auto keys = [&] {
    put_u32(out, static_cast<uint32_t>(m.keys.size()));
    for (auto& k : m.keys) put_bytes(out, k.data(), k.size());
  };
  auto value = [&](size_t i) { put_bytes(out, m.values[i].data(), m.values[i].size()); };
  auto timeout = [&] {
    WEFT_CHECK(m.integer >= 0 && m.integer <= kMaxTimeoutMs, "store timeout ", m.integer,
               " ms out of range");
    put_u64(out, static_cast<uint64_t>(m.integer));
  };
  switch (t) {
    case MsgType::kSet:
      need_keys(1, 1), need_values(1), key(), value(0);
      break;
    case MsgType::kGet:
      need_keys(1, 1), key(), timeout();
      break;
    case MsgType::kAdd:
      need_keys(1, 1), key(), put_u64(out, static_cast<uint64_t>(m.integer));
      break;
    case MsgType::kCompareSet:
      need_keys(1, 1), need_values(2), key(), value(0), value(1);
      break;
    case MsgType::kCheck:
      need_keys(0, kMaxKeys), keys();
      break;
    case MsgType::kDelete:
      need_keys(1, 1), key();
      break;
    case MsgType::kWait:
      need_keys(0, kMaxKeys), keys(), timeout();
      break;
    case MsgType::kNumKeys:
      break;
    case MsgType::kHello:
      need_keys(2, 2), keys();
      break;
    case MsgType::kOk:
      break;
    case MsgType::kValue:
      need_values(1), value(0);
      break;
    case MsgType::kInt:
      put_u64(out, static_cast<uint64_t>(m.integer));
      break;
    case MsgType::kBool:
      WEFT_CHECK(m.integer == 0 || m.integer == 1, "store bool must be 0 or 1");
      out.push_back(static_cast<uint8_t>(m.integer));
      break;
    case MsgType::kTimeout:
      need_keys(0, kMaxKeys), keys();
      break;
    case MsgType::kError: {
      // Error text is informational; truncate rather than fail to report the error.
      const size_t n = std::min(m.text.size(), kMaxErrorSize);
      put_bytes(out, m.text.data(), n);
      break;
    }
  }
}

}  // namespace

std::vector<uint8_t> encode_message(const Message& m) {
  const auto t = m.type;
  WEFT_CHECK(known_type(static_cast<uint16_t>(t)), "store message: unknown type ",
             static_cast<int>(t));
  for (auto& k : m.keys)
    WEFT_CHECK(k.size() <= kMaxKeySize, "store key of ", k.size(), " bytes exceeds the ",
               kMaxKeySize, "-byte limit");
  for (auto& v : m.values)
    WEFT_CHECK(v.size() <= kMaxValueSize, "store value of ", v.size(),
               " bytes exceeds the limit of ", kMaxValueSize);
  std::vector<uint8_t> out = {'W', 'F', 'S', 'T'};
  out.push_back(kVersion & 0xff);
  out.push_back(kVersion >> 8);
  out.push_back(static_cast<uint16_t>(t) & 0xff);
  out.push_back(static_cast<uint16_t>(t) >> 8);
  put_u32(out, 0);  // payload length, patched below
  encode_payload(m, out);
  const size_t len = out.size() - kHeaderSize;
  for (int i = 0; i < 4; ++i) out[8 + i] = static_cast<uint8_t>(len >> (8 * i));
  return out;
}

}  // namespace weft::dist::proto
