// libFuzzer target for the safetensors parser. Any input must either parse or throw weft::Error;
// a parsed file's views must lie inside the input, verifying its checksum entries must pass or
// throw weft::ChecksumError, and re-serializing it must give a file that parses to the same
// tensors. Anything else (other exception, sanitizer report, trap) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "weft/error.h"
#include "weft/serialize/checksum.h"
#include "weft/serialize/safetensors_format.h"

using weft::serialize::SafetensorsFile;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  SafetensorsFile f;
  try {
    f = SafetensorsFile::parse(std::vector<uint8_t>(data, data + size));
  } catch (const weft::Error&) {
    return 0;
  }
  // Touch every byte of every view so ASan checks the bounds.
  volatile uint8_t sink = 0;
  for (const auto& t : f.tensors())
    for (size_t i = 0; i < t.nbytes; ++i) sink = sink ^ t.data[i];
  try {
    const auto rest = weft::serialize::verify_checksums(f, "fuzz input");
    if (rest.size() > f.metadata().size()) std::abort();
  } catch (const weft::ChecksumError&) {
  }

  // Differential check: serialize -> parse is the identity on what parse() accepted.
  const auto bytes = weft::serialize::serialize_safetensors(f.tensors(), f.metadata());
  const auto g = SafetensorsFile::parse(bytes);
  if (g.tensors().size() != f.tensors().size() || g.metadata() != f.metadata()) std::abort();
  for (const auto& t : f.tensors()) {
    const auto* u = g.find(t.name);
    if (!u || u->dtype != t.dtype || u->shape != t.shape || u->nbytes != t.nbytes) std::abort();
    if (t.nbytes && std::memcmp(u->data, t.data, t.nbytes) != 0) std::abort();
  }
  return 0;
}
