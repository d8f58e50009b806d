#include "data/gzip_stream.h"

#include <algorithm>

#include "weft/error.h"

namespace weft::data {

bool is_gzip(const uint8_t* p, size_t n) { return n >= 2 && p[0] == 0x1f && p[1] == 0x8b; }

GzipStream::GzipStream(const uint8_t* in, size_t n) : next_(in), unfed_(n) {
  // 16 + MAX_WBITS: expect a gzip wrapper (zlib checks its header and CRC-32 trailer).
  WEFT_CHECK(inflateInit2(&zs_, 16 + MAX_WBITS) == Z_OK, "gzip: inflateInit2 failed");
}

GzipStream::~GzipStream() { inflateEnd(&zs_); }

size_t GzipStream::read(uint8_t* out, size_t n) {
  size_t filled = 0;
  while (filled < n && !done_) {
    // zlib counts in 32-bit uInt, so input and output go in chunks of at most 1 GiB.
    if (zs_.avail_in == 0 && unfed_ > 0) {
      const size_t chunk = std::min<size_t>(unfed_, 1u << 30);
      zs_.next_in = const_cast<Bytef*>(next_);
      zs_.avail_in = static_cast<uInt>(chunk);
      next_ += chunk;
      unfed_ -= chunk;
    }
    zs_.next_out = out + filled;
    zs_.avail_out = static_cast<uInt>(std::min<size_t>(n - filled, 1u << 30));
    const uInt room = zs_.avail_out;
    const int rc = inflate(&zs_, Z_NO_FLUSH);
    filled += room - zs_.avail_out;
    const size_t remaining = zs_.avail_in + unfed_;
    if (rc == Z_STREAM_END) {
      if (remaining == 0) {
        done_ = true;
        break;
      }
      // The input is one buffer, so what zlib has not consumed runs on into next_.
      WEFT_CHECK(is_gzip(zs_.next_in, remaining), "gzip: ", remaining,
                 " trailing bytes after the compressed data");
      WEFT_CHECK(inflateReset(&zs_) == Z_OK, "gzip: inflateReset failed");
      continue;
    }
    WEFT_CHECK(rc == Z_OK || rc == Z_BUF_ERROR, "gzip: corrupt data (",
               zs_.msg ? zs_.msg : "inflate error", ")");
    // Input all consumed, output space left, and no end of stream: the data stops early.
    WEFT_CHECK(remaining > 0 || zs_.avail_out == 0, "gzip: truncated compressed data");
    WEFT_CHECK(rc == Z_OK || zs_.avail_in == 0 || zs_.avail_out == 0, "gzip: corrupt data");
  }
  return filled;
}

}  // namespace weft::data
