#include "serialize/torch_load/file_kind.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "weft/error.h"

namespace weft::serialize {
namespace {

bool starts_with(const uint8_t* data, size_t size, const char* magic, size_t n, size_t at = 0) {
  return size >= at + n && std::memcmp(data + at, magic, n) == 0;
}

}  // namespace

FileKind sniff_file_kind(const uint8_t* data, size_t size) {
  // torch.save's legacy files open with the pickled magic number 0x1950a86a20f9469cfc6c.
  static const char kLegacy[] = "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e";
  if (starts_with(data, size, "PK\x03\x04", 4) || starts_with(data, size, "PK\x05\x06", 4))
    return FileKind::Zip;
  if (starts_with(data, size, kLegacy, sizeof kLegacy - 1)) return FileKind::TorchLegacy;
  if (starts_with(data, size, "\x1f\x8b", 2)) return FileKind::Gzip;
  if (starts_with(data, size, "ustar", 5, 257)) return FileKind::Tar;
  if (starts_with(data, size, "\x93NUMPY", 6)) return FileKind::Npy;
  if (starts_with(data, size, "\x89HDF\r\n\x1a\n", 8)) return FileKind::Hdf5;
  if (starts_with(data, size, "GGUF", 4)) return FileKind::Gguf;
  // Before the pickle test: a safetensors header size of 0x280 bytes starts "\x80\x02" too.
  if (size >= 9 && data[8] == '{') return FileKind::Safetensors;
  if (size >= 2 && data[0] == 0x80 && data[1] >= 2 && data[1] <= 5) return FileKind::Pickle;
  return FileKind::Unknown;
}

std::string describe_file_kind(FileKind kind) {
  switch (kind) {
    case FileKind::Zip:
      return "a zip archive";
    case FileKind::TorchLegacy:
      return "a PyTorch pickle file (torch.save's format before PyTorch 1.6)";
    case FileKind::Pickle:
      return "a Python pickle file (not written by torch.save: no zip archive, no torch magic "
             "number)";
    case FileKind::Gzip:
      return "a gzip file";
    case FileKind::Tar:
      return "a tar archive (torch.save's tar format from before PyTorch 0.4 is not supported)";
    case FileKind::Npy:
      return "a numpy .npy file";
    case FileKind::Hdf5:
      return "an HDF5 file (a Keras .h5 model?)";
    case FileKind::Gguf:
      return "a GGUF file";
    case FileKind::Safetensors:
      return "a safetensors file";
    case FileKind::Unknown:
      break;
  }
  return "a file of unknown format";
}

std::string read_file_prefix(const std::string& path, size_t n, const char* what) {
  std::ifstream in(path, std::ios::binary);
  WEFT_CHECK(in.is_open(), what, ": cannot open '", path, "': ", std::strerror(errno));
  std::string out(n, '\0');
  in.read(out.data(), static_cast<std::streamsize>(n));
  out.resize(static_cast<size_t>(in.gcount()));
  return out;
}

}  // namespace weft::serialize
