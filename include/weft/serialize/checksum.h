// Per-tensor checksums in a safetensors file's "__metadata__" (Note [Resuming a job]): weft::save
// writes "weft.xxh64.<tensor name>" = the XXH64 (seed 0) of the tensor's bytes as stored, in 16
// lowercase hex digits, and weft::load verifies them: a mismatch is a ChecksumError naming the
// tensor and the file. Other readers ignore the entries; files without them still load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "weft/error.h"
#include "weft/serialize/safetensors_format.h"

namespace weft {

// A file whose bytes disagree with its own checksums (or whose checksum entries are malformed).
class ChecksumError : public Error {
 public:
  using Error::Error;
};

namespace serialize {

inline constexpr std::string_view kChecksumKeyPrefix = "weft.xxh64.";

uint64_t xxh64(const void* data, size_t n);
// xxh64() as 16 lowercase hex digits, most significant first (as xxhsum -H1 prints it).
std::string xxh64_hex(const void* data, size_t n);

// Adds each tensor's checksum entry to `metadata`. Refuses metadata that already uses the
// prefix (it is reserved), so that a caller cannot plant a wrong checksum.
void add_checksums(const std::vector<TensorView>& tensors,
                   std::map<std::string, std::string>* metadata);

// Checks every checksum entry of `file` against its tensor's bytes: a mismatch, an entry that is
// not 16 hex digits or one naming an absent tensor throws ChecksumError naming the tensor and
// `name` (the file). Tensors without an entry pass. Returns the metadata less those entries.
std::map<std::string, std::string> verify_checksums(const SafetensorsFile& file,
                                                    const std::string& name);

}  // namespace serialize
}  // namespace weft
