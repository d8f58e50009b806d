// The IDX file format of MNIST (http://yann.lecun.com/exdb/mnist/), plain or gzip-compressed,
// independent of weft::Tensor. Guarantees: every malformed, truncated or oversized input is a
// weft::Error naming the problem (and the path when reading a file), never an out-of-bounds read;
// gzip is recognised by its magic bytes, and against decompression bombs the size its IDX header
// declares is checked against a cap before any data is inflated, and inflating stops there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace weft::data {

struct IdxArray {
  // 0x08 ubyte, 0x09 sbyte, 0x0B short, 0x0C int, 0x0D float, 0x0E double
  uint8_t type_code = 0;
  std::vector<int64_t> dims;
  // The elements, row-major, converted from the file's big-endian to host byte order.
  std::vector<uint8_t> data;
};

// Largest decompressed size (header and data) accepted by default (2 GiB; MNIST's largest
// file is 47 MB).
inline constexpr size_t kIdxMaxDecompressedBytes = size_t{2} << 30;

// Bytes per element of an IDX type code; throws weft::Error for an unknown code.
size_t idx_itemsize(uint8_t type_code);

IdxArray read_idx(const std::string& path,
                  size_t max_decompressed_bytes = kIdxMaxDecompressedBytes);
// `bytes` may be plain IDX or gzip-compressed IDX.
IdxArray parse_idx(const uint8_t* bytes, size_t n,
                   size_t max_decompressed_bytes = kIdxMaxDecompressedBytes);

}  // namespace weft::data
