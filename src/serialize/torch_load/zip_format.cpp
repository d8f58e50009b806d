// torch.save's zip format (PyTorch >= 1.6): <dir>/data.pkl is the pickle, <dir>/data/<key> the
// raw little-endian bytes of each storage; <dir> is "archive" or the file's stem.
#include <algorithm>

#include "serialize/torch_load/formats.h"
#include "serialize/torch_load/to_value.h"
#include "serialize/torch_load/zip_reader.h"
#include "weft/error.h"

namespace weft::serialize {
namespace {

constexpr uint64_t kMaxPickleBytes = uint64_t{1} << 30;

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// "<dir>/" of the top-level data.pkl, as PyTorch's reader finds it; refuses other zip files,
// naming what they look like.
std::string archive_dir(const ZipReader& zip) {
  const auto& names = zip.names();
  for (const std::string& n : names) {
    const size_t slash = n.find('/');
    if (slash != std::string::npos && slash > 0 &&
        n.compare(slash, std::string::npos, "/data.pkl") == 0)
      return n.substr(0, slash + 1);
  }
  const bool npz = std::any_of(names.begin(), names.end(),
                               [](const std::string& n) { return ends_with(n, ".npy"); });
  WEFT_CHECK(!npz,
             "this is a zip archive of .npy arrays (numpy .npz), not a torch.save checkpoint");
  WEFT_ERROR("this is a zip archive without a <dir>/data.pkl record, not a torch.save checkpoint");
}

}  // namespace

TorchValue load_torch_zip(const uint8_t* data, size_t size, std::optional<Device> map_location) {
  ZipReader zip(data, size);
  const std::string dir = archive_dir(zip);
  const bool script =
      std::any_of(zip.names().begin(), zip.names().end(), [&](const std::string& n) {
        return n == dir + "constants.pkl" || n.rfind(dir + "code/", 0) == 0;
      });
  WEFT_CHECK(!script,
             "this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint");
  if (zip.has(dir + "byteorder")) {
    const std::vector<uint8_t> order = zip.read(dir + "byteorder", 16);
    WEFT_CHECK(std::string(order.begin(), order.end()) == "little",
               "the checkpoint was saved big-endian, which weft does not load");
  }
  const std::vector<uint8_t> pkl = zip.read(dir + "data.pkl", kMaxPickleBytes);
  const pickle::Unpickled u = pickle::unpickle(pkl.data(), pkl.size(), torch_pickle_limits());
  ValueBuilder builder(
      map_location,
      [&](const pickle::Object& s, uint8_t* dst, size_t n) {
        zip.read(dir + "data/" + s.str, dst, n);
      },
      torch_pickle_limits());
  return builder.convert(*u.root);
}

}  // namespace weft::serialize
