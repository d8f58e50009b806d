// What a checkpoint file looks like, from its first bytes, so that a file weft cannot read is
// named for what it is ("a gzip file", "a Python pickle") rather than misparsed as another format.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace weft::serialize {

enum class FileKind {
  Zip,          // a zip archive: torch.save's format since PyTorch 1.6 (or a .npz, TorchScript...)
  TorchLegacy,  // torch.save's format before PyTorch 1.6 (pickles, magic number first)
  Pickle,       // some other binary pickle
  Gzip,
  Tar,
  Npy,
  Hdf5,
  Gguf,
  Safetensors,  // 8-byte header size and a '{' after it
  Unknown,
};

// Bytes enough to tell every kind apart (tar's magic is at offset 257).
constexpr size_t kSniffBytes = 512;

FileKind sniff_file_kind(const uint8_t* data, size_t size);
// "a gzip file", "a PyTorch checkpoint (torch.save zip format)", ...
std::string describe_file_kind(FileKind kind);
// The first up-to-n bytes of the file at `path` (throws "<what>: cannot open '<path>'").
std::string read_file_prefix(const std::string& path, size_t n, const char* what);

}  // namespace weft::serialize
