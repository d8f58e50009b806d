#include "weft/data/cifar10.h"

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <vector>

#include "weft/error.h"
#include "weft/ops.h"
#include "weft/read_file.h"

namespace weft::data {

namespace {

namespace fs = std::filesystem;

constexpr int64_t kSide = 32, kPlane = kSide * kSide, kRecord = 1 + 3 * kPlane;

// The directory holding the batch files: `root` itself or the tarball's cifar-10-batches-bin.
fs::path batches_dir(const fs::path& root, const std::string& first) {
  std::error_code ec;
  for (const fs::path& d : {root, root / "cifar-10-batches-bin"})
    if (fs::is_regular_file(d / first, ec)) return d;
  WEFT_CHECK(fs::is_directory(root, ec), "CIFAR10: directory '", root.string(),
             "' does not exist (looking for ", first, ")");
  WEFT_ERROR("CIFAR10: no ", first, " in '", root.string(), "' or in '",
             (root / "cifar-10-batches-bin").string(),
             "' (extract cifar-10-binary.tar.gz from the CIFAR-10 page there)");
}

}  // namespace

CIFAR10::CIFAR10(const std::string& root, bool train, CIFAR10Options options) {
  WEFT_CHECK(!options.limit || *options.limit >= 0, "CIFAR10: limit must be >= 0, got ",
             *options.limit);
  if (options.normalize)
    for (double s : options.std)
      WEFT_CHECK(s > 0, "CIFAR10: normalize needs every std > 0, got ", s);
  std::vector<std::string> names;
  if (train)
    for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
  else
    names.push_back("test_batch.bin");
  const fs::path dir = batches_dir(root, names.front());

  // Whole records from every file, checked before anything is converted.
  std::vector<std::vector<uint8_t>> files;
  int64_t total = 0;
  for (const std::string& name : names) {
    const std::string path = (dir / name).string();
    std::error_code ec;
    WEFT_CHECK(fs::is_regular_file(path, ec), "CIFAR10: missing ", path);
    files.push_back(read_file(path, "CIFAR10 batch"));
    const auto bytes = static_cast<int64_t>(files.back().size());
    WEFT_CHECK(bytes % kRecord == 0, "CIFAR10: ", path, " has ", bytes,
               " bytes, not a whole number of ", kRecord, "-byte records (truncated?)");
    for (int64_t r = 0; r < bytes / kRecord; ++r)
      WEFT_CHECK(files.back()[r * kRecord] <= 9, "CIFAR10: ", path, ": label ",
                 int(files.back()[r * kRecord]), " of record ", r, " is outside 0..9");
    total += bytes / kRecord;
  }

  const int64_t n = std::min(total, options.limit.value_or(total));
  images_ = empty({n, 3, kSide, kSide});
  labels_ = empty({n}, {.dtype = kInt64});
  float* img = images_.data_ptr<float>();
  int64_t* lab = labels_.data_ptr<int64_t>();
  // Per channel, x/255 then (x - mean)/std folded into one scale and shift.
  double scale[3], shift[3];
  for (int c = 0; c < 3; ++c) {
    scale[c] = options.normalize ? 1.0 / (255.0 * options.std[c]) : 1.0 / 255.0;
    shift[c] = options.normalize ? -options.mean[c] / options.std[c] : 0.0;
  }
  int64_t i = 0;
  for (const auto& f : files)
    for (int64_t r = 0; r < static_cast<int64_t>(f.size()) / kRecord && i < n; ++r, ++i) {
      const uint8_t* rec = f.data() + r * kRecord;
      lab[i] = rec[0];
      for (int c = 0; c < 3; ++c)
        for (int64_t p = 0; p < kPlane; ++p)
          img[(i * 3 + c) * kPlane + p] = static_cast<float>(
              static_cast<double>(rec[1 + c * kPlane + p]) * scale[c] + shift[c]);
    }
}

Example CIFAR10::get(size_t index) const {
  WEFT_CHECK(index < size(), "CIFAR10: index ", index, " out of range for ", size(), " samples");
  const auto i = static_cast<int64_t>(index);
  return {images_[i], labels_[i]};
}

}  // namespace weft::data
