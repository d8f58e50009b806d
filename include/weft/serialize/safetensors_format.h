// The safetensors file format at the byte level (https://github.com/huggingface/safetensors),
// independent of weft::Tensor. Guarantees: parse() validates everything the official reader does
// (header size, JSON shape, dtypes, offsets contiguous and in bounds, sizes) and reports any
// problem as weft::Error naming the tensor, never reading out of bounds; writes are byte-compatible
// with the Python package and atomic (temp file, fsync, rename, fsync of the directory).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace weft::serialize {

// One tensor's bytes, little-endian and densely packed in row-major order, as the format stores
// them. `data` is not owned: it points into a SafetensorsFile or into the caller's memory, and is
// not necessarily aligned to the dtype (copy with memcpy rather than casting).
struct TensorView {
  std::string name;
  std::string dtype;  // "F32", "I64", "BF16", ... as in the safetensors spec
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
};

// Bytes per element of a safetensors dtype name; throws weft::Error for an unknown one. Covers
// every byte-sized dtype of the spec: BOOL U8 I8 F8_E5M2 F8_E4M3 F8_E8M0 I16 U16 F16 BF16 I32 U32
// F32 I64 U64 F64 C64 (the sub-byte F4/F6 kinds are rejected).
size_t dtype_itemsize(const std::string& dtype);

// A parsed file. It owns its bytes (shared between copies, so copying is cheap and the views stay
// valid as long as any copy lives).
class SafetensorsFile {
 public:
  // Reads and parses the whole file; errors name the path.
  static SafetensorsFile read(const std::string& path);
  static SafetensorsFile parse(std::vector<uint8_t> bytes);

  // In file order: ascending data offset (ties between empty tensors broken by name). For files
  // this library or the Python package writes, that is by decreasing itemsize, then by name.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorView* find(const std::string& name) const;
  // The optional "__metadata__" map (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::shared_ptr<const std::vector<uint8_t>> bytes_;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// The file's bytes. Layout as the official writer: tensors ordered by decreasing itemsize, then by
// name (so every tensor's data is aligned to its itemsize), header JSON {"__metadata__" first when
// non-empty, then the tensors in data order} padded with spaces to a multiple of 8 bytes.
// Throws weft::Error for duplicate or reserved names, unknown dtypes, negative dims, nbytes that
// disagree with the shape, or names/metadata that are not valid UTF-8.
std::vector<uint8_t> serialize_safetensors(const std::vector<TensorView>& tensors,
                                           const std::map<std::string, std::string>& metadata);

// serialize_safetensors() written atomically: a failure at any point leaves `path` as it was
// (the temp file is removed); after success the new file has been fsync'ed with its directory.
void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace weft::serialize
