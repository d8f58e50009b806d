// Read-only access to the records of a zip archive held in memory, through libzip: the container
// of torch.save's format since PyTorch 1.6. Guarantees: records are read whole and exactly (a
// short or failed read is an error naming the record); bad archives throw weft::Error, never crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct zip;

namespace weft::serialize {

class ZipReader {
 public:
  // `data` must outlive the reader (libzip reads it in place).
  ZipReader(const uint8_t* data, size_t size);
  ~ZipReader();
  ZipReader(const ZipReader&) = delete;
  ZipReader& operator=(const ZipReader&) = delete;

  const std::vector<std::string>& names() const { return names_; }
  bool has(const std::string& name) const;
  // The record's uncompressed size; throws when there is no such record.
  uint64_t size(const std::string& name) const;
  // Reads the whole record into dst, which holds exactly `n` bytes: the record must be n bytes.
  void read(const std::string& name, void* dst, uint64_t n) const;
  // The whole record, refused when larger than max_bytes.
  std::vector<uint8_t> read(const std::string& name, uint64_t max_bytes) const;

 private:
  int64_t index(const std::string& name) const;
  zip* archive_ = nullptr;
  std::vector<std::string> names_;
};

}  // namespace weft::serialize
