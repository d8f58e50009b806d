#include "weft/data/idx_format.h"

#include <algorithm>
#include <bit>

#include "data/gzip_stream.h"
#include "weft/error.h"
#include "weft/read_file.h"

namespace weft::data {
namespace {

// What an IDX header says: the element type, the dims, the header's and the data's size.
struct IdxHeader {
  uint8_t type_code = 0;
  std::vector<int64_t> dims;
  size_t header_bytes = 0;
  uint64_t data_bytes = 0;
};

// Parses the header at the start of `bytes` (n of them; the data need not follow yet).
IdxHeader parse_header(const uint8_t* bytes, size_t n) {
  WEFT_CHECK(n >= 4, "idx: file is ", n, " bytes, shorter than the 4-byte magic number");
  WEFT_CHECK(bytes[0] == 0 && bytes[1] == 0, "idx: bad magic number (first two bytes must be 0)");
  IdxHeader h;
  h.type_code = bytes[2];
  const size_t itemsize = idx_itemsize(h.type_code);
  const size_t ndims = bytes[3];
  WEFT_CHECK(ndims >= 1 && ndims <= 8, "idx: ", ndims, " dimensions, expected 1 to 8");
  h.header_bytes = 4 + 4 * ndims;
  WEFT_CHECK(n >= h.header_bytes, "idx: file is ", n, " bytes, too short for its ", ndims,
             " dimension sizes");
  uint64_t expected = itemsize;
  bool overflow = false;
  for (size_t i = 0; i < ndims; ++i) {
    const uint8_t* p = bytes + 4 + 4 * i;
    const uint32_t d =
        (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
    h.dims.push_back(d);
    overflow = overflow || __builtin_mul_overflow(expected, uint64_t{d}, &expected);
  }
  if (std::find(h.dims.begin(), h.dims.end(), 0) != h.dims.end()) {
    overflow = false;  // a zero dimension makes the true product 0
    expected = 0;
  }
  WEFT_CHECK(!overflow, "idx: dimensions declare more than 2^64 bytes of data");
  h.data_bytes = expected;
  return h;
}

// The array of `h` with `data` (already h.data_bytes of them) in host byte order.
IdxArray make_array(IdxHeader h, std::vector<uint8_t> data) {
  IdxArray a;
  a.type_code = h.type_code;
  a.dims = std::move(h.dims);
  a.data = std::move(data);
  // IDX stores every element big-endian.
  const size_t itemsize = idx_itemsize(a.type_code);
  if constexpr (std::endian::native == std::endian::little) {
    if (itemsize > 1)
      for (size_t i = 0; i < a.data.size(); i += itemsize)
        std::reverse(a.data.begin() + static_cast<std::ptrdiff_t>(i),
                     a.data.begin() + static_cast<std::ptrdiff_t>(i + itemsize));
  }
  return a;
}

IdxArray parse_plain(const uint8_t* bytes, size_t n) {
  IdxHeader h = parse_header(bytes, n);
  const size_t actual = n - h.header_bytes;
  WEFT_CHECK(h.data_bytes == actual, "idx: dimensions declare ", h.data_bytes,
             " bytes of data but the file holds ", actual);
  std::vector<uint8_t> data(bytes + h.header_bytes, bytes + n);
  return make_array(std::move(h), std::move(data));
}

// Inflates the header first and checks the size it declares against `cap` before inflating
// any data; then inflates exactly that much (one allocation, no growth) and refuses a stream
// that goes on past it without inflating the rest. A bomb costs at most `cap` bytes of memory.
IdxArray parse_gzip(const uint8_t* bytes, size_t n, size_t cap) {
  GzipStream z(bytes, n);
  std::vector<uint8_t> head(4 + 4 * 8);
  size_t got = z.read(head.data(), 4);
  if (got == 4 && head[3] >= 1 && head[3] <= 8) got += z.read(head.data() + 4, 4 * head[3]);
  IdxHeader h = parse_header(head.data(), got);
  WEFT_CHECK(h.header_bytes <= cap && h.data_bytes <= cap - h.header_bytes,
             "gzip: decompressed data exceeds the limit of ", cap, " bytes: the IDX header ",
             "declares ", h.data_bytes, " bytes of data after its ", h.header_bytes);
  std::vector<uint8_t> data(static_cast<size_t>(h.data_bytes));
  const size_t actual = z.read(data.data(), data.size());
  WEFT_CHECK(actual == h.data_bytes, "idx: dimensions declare ", h.data_bytes,
             " bytes of data but the file holds ", actual);
  uint8_t extra = 0;
  WEFT_CHECK(z.read(&extra, 1) == 0, "idx: dimensions declare ", h.data_bytes,
             " bytes of data but the file holds more (not inflated past that point)");
  return make_array(std::move(h), std::move(data));
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
  // Only one level: a gzip inside the gzip fails the magic check like any other non-IDX data.
  if (is_gzip(bytes, n)) return parse_gzip(bytes, n, max_decompressed_bytes);
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
