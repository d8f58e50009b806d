// Reads gzip data (one or more concatenated members, as `cat a.gz b.gz` or pigz produce) as a
// stream: the caller takes the inflated bytes as it needs them and may stop at any point, so no
// more is ever inflated than it asked for. Guarantees: every corrupt, truncated or trailing-junk
// input is a weft::Error ("gzip: ..."), never an out-of-bounds read.
#pragma once

#include <zlib.h>

#include <cstddef>
#include <cstdint>

namespace weft::data {

// True when `p` starts with gzip's magic bytes.
bool is_gzip(const uint8_t* p, size_t n);

class GzipStream {
 public:
  // Reads from [in, in + n), which must outlive the stream.
  GzipStream(const uint8_t* in, size_t n);
  ~GzipStream();
  GzipStream(const GzipStream&) = delete;
  GzipStream& operator=(const GzipStream&) = delete;

  // Inflates up to `n` bytes into `out`; returns how many, fewer only at the end of the data,
  // which has then been checked through (CRC-32s, no trailing bytes).
  size_t read(uint8_t* out, size_t n);

 private:
  z_stream zs_{};
  const uint8_t* next_;  // input not yet handed to zlib
  size_t unfed_;
  bool done_ = false;
};

}  // namespace weft::data
