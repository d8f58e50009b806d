#include "weft/data/idx_format.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>

#include "weft/error.h"
#include "weft/read_file.h"

namespace weft::data {
namespace {

bool is_gzip(const uint8_t* p, size_t n) { return n >= 2 && p[0] == 0x1f && p[1] == 0x8b; }

// Inflates one or more concatenated gzip members (what `cat a.gz b.gz` or pigz produce), refusing
// to produce more than `cap` bytes so that a small malicious file cannot exhaust memory.
std::vector<uint8_t> gunzip(const uint8_t* in, size_t n, size_t cap) {
  z_stream zs{};
  // 16 + MAX_WBITS: expect a gzip wrapper (zlib checks its header and CRC-32 trailer).
  WEFT_CHECK(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK, "gzip: inflateInit2 failed");
  struct Guard {
    z_stream* zs;
    ~Guard() { inflateEnd(zs); }
  } guard{&zs};

  // zlib counts in 32-bit uInt, so input is fed in chunks; unfed bytes follow zs.next_in.
  const uint8_t* next = in;
  size_t unfed = n;
  const size_t limit = std::min(cap, std::numeric_limits<size_t>::max() - 1);
  std::vector<uint8_t> out;
  size_t filled = 0;
  for (;;) {
    if (zs.avail_in == 0 && unfed > 0) {
      const size_t chunk = std::min<size_t>(unfed, 1u << 30);
      zs.next_in = const_cast<Bytef*>(next);
      zs.avail_in = static_cast<uInt>(chunk);
      next += chunk;
      unfed -= chunk;
    }
    if (filled == out.size()) {
      // One byte beyond the cap is room enough to detect that the cap is exceeded.
      out.resize(std::min(limit + 1, std::max(out.size() * 2, size_t{1} << 16)));
    }
    zs.next_out = out.data() + filled;
    zs.avail_out = static_cast<uInt>(std::min<size_t>(out.size() - filled, 1u << 30));
    const uInt room = zs.avail_out;
    const int rc = inflate(&zs, Z_NO_FLUSH);
    filled += room - zs.avail_out;
    WEFT_CHECK(filled <= limit, "gzip: decompressed data exceeds the limit of ", limit, " bytes");
    const size_t remaining = zs.avail_in + unfed;
    if (rc == Z_STREAM_END) {
      if (remaining == 0) break;
      WEFT_CHECK(is_gzip(zs.next_in, remaining), "gzip: ", remaining,
                 " trailing bytes after the compressed data");
      WEFT_CHECK(inflateReset(&zs) == Z_OK, "gzip: inflateReset failed");
      continue;
    }
    WEFT_CHECK(rc == Z_OK || rc == Z_BUF_ERROR, "gzip: corrupt data (",
               zs.msg ? zs.msg : "inflate error", ")");
    // Input all consumed, output space left, and no end of stream: the data stops early.
    WEFT_CHECK(remaining > 0 || zs.avail_out == 0, "gzip: truncated compressed data");
    WEFT_CHECK(rc == Z_OK || zs.avail_in == 0 || zs.avail_out == 0, "gzip: corrupt data");
  }
  out.resize(filled);
  return out;
}

IdxArray parse_plain(const uint8_t* bytes, size_t n) {
  WEFT_CHECK(n >= 4, "idx: file is ", n, " bytes, shorter than the 4-byte magic number");
  WEFT_CHECK(bytes[0] == 0 && bytes[1] == 0, "idx: bad magic number (first two bytes must be 0)");
  IdxArray a;
  a.type_code = bytes[2];
  const size_t itemsize = idx_itemsize(a.type_code);
  const size_t ndims = bytes[3];
  WEFT_CHECK(ndims >= 1 && ndims <= 8, "idx: ", ndims, " dimensions, expected 1 to 8");
  const size_t header = 4 + 4 * ndims;
  WEFT_CHECK(n >= header, "idx: file is ", n, " bytes, too short for its ", ndims,
             " dimension sizes");
  uint64_t expected = itemsize;
  bool overflow = false;
  for (size_t i = 0; i < ndims; ++i) {
    const uint8_t* p = bytes + 4 + 4 * i;
    const uint32_t d =
        (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
    a.dims.push_back(d);
    overflow = overflow || __builtin_mul_overflow(expected, uint64_t{d}, &expected);
  }
  if (std::find(a.dims.begin(), a.dims.end(), 0) != a.dims.end()) {
    overflow = false;  // a zero dimension makes the true product 0
    expected = 0;
  }
  const size_t actual = n - header;
  WEFT_CHECK(!overflow && expected == actual, "idx: dimensions declare ",
             overflow ? std::string("more than 2^64") : std::to_string(expected),
             " bytes of data but the file holds ", actual);
  a.data.assign(bytes + header, bytes + n);
  // IDX stores every element big-endian.
  if constexpr (std::endian::native == std::endian::little) {
    if (itemsize > 1)
      for (size_t i = 0; i < a.data.size(); i += itemsize)
        std::reverse(a.data.begin() + static_cast<std::ptrdiff_t>(i),
                     a.data.begin() + static_cast<std::ptrdiff_t>(i + itemsize));
  }
  return a;
}

}  // namespace

size_t idx_itemsize(uint8_t type_code) {
  switch (type_code) {
    case 0x08:
    case 0x09:
      return 1;
    case 0x0B:
      return 2;
    case 0x0C:
    case 0x0D:
      return 4;
    case 0x0E:
      return 8;
    default:
      WEFT_ERROR("idx: unknown type code 0x", std::hex, static_cast<int>(type_code));
  }
}

IdxArray parse_idx(const uint8_t* bytes, size_t n, size_t max_decompressed_bytes) {
  if (is_gzip(bytes, n)) {
    // Only one level: a gzip inside the gzip fails the magic check like any other non-IDX data.
    const std::vector<uint8_t> plain = gunzip(bytes, n, max_decompressed_bytes);
    return parse_plain(plain.data(), plain.size());
  }
  return parse_plain(bytes, n);
}

IdxArray read_idx(const std::string& path, size_t max_decompressed_bytes) {
  std::vector<uint8_t> bytes = read_file(path, "idx");
  try {
    return parse_idx(bytes.data(), bytes.size(), max_decompressed_bytes);
  } catch (const Error& e) {
    // Rethrown directly (not via WEFT_ERROR) so the message keeps a single file:line suffix.
    throw Error("in '" + path + "': " + e.what());
  }
}

}  // namespace weft::data
