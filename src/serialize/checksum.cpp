#include "weft/serialize/checksum.h"

#include <xxhash.h>

#include <cstdio>

namespace weft::serialize {
namespace {

bool is_checksum_key(const std::string& key) {
  return std::string_view(key).substr(0, kChecksumKeyPrefix.size()) == kChecksumKeyPrefix;
}

bool is_hex16(const std::string& s) {
  if (s.size() != 16) return false;
  for (char ch : s)
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
  return true;
}

}  // namespace

uint64_t xxh64(const void* data, size_t n) {
  // XXH64 reads nothing for n == 0, but wants a valid pointer all the same.
  static const char kEmpty = 0;
  return XXH64(n ? data : &kEmpty, n, /*seed=*/0);
}

std::string xxh64_hex(const void* data, size_t n) {
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(xxh64(data, n)));
  return out;
}

void add_checksums(const std::vector<TensorView>& tensors,
                   std::map<std::string, std::string>* metadata) {
  for (const auto& [key, value] : *metadata)
    WEFT_CHECK(!is_checksum_key(key), "save: metadata key '", key, "' uses the prefix '",
               kChecksumKeyPrefix, "', which weft reserves for its tensor checksums");
  for (const TensorView& t : tensors)
    (*metadata)[std::string(kChecksumKeyPrefix) + t.name] = xxh64_hex(t.data, t.nbytes);
}

std::map<std::string, std::string> verify_checksums(const SafetensorsFile& file,
                                                    const std::string& name) {
  std::map<std::string, std::string> rest;
  for (const auto& [key, stored] : file.metadata()) {
    if (!is_checksum_key(key)) {
      rest.emplace(key, stored);
      continue;
    }
    const std::string tensor = key.substr(kChecksumKeyPrefix.size());
    WEFT_CHECK_T(ChecksumError, is_hex16(stored), "bad checksum entry '", key, "' of '", name,
                 "': '", stored, "' is not 16 lowercase hex digits (the header is damaged)");
    const TensorView* t = file.find(tensor);
    WEFT_CHECK_T(ChecksumError, t != nullptr, "checksum entry '", key, "' of '", name,
                 "' names tensor '", tensor,
                 "', which the file does not hold (the header is damaged)");
    const std::string actual = xxh64_hex(t->data, t->nbytes);
    WEFT_CHECK_T(ChecksumError, actual == stored, "checksum mismatch in tensor '", tensor, "' of '",
                 name, "': its bytes hash to xxh64 ", actual, " but the file says ", stored,
                 " (the file is corrupt)");
  }
  return rest;
}

}  // namespace weft::serialize
