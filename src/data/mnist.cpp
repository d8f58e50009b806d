#include "weft/data/mnist.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "weft/data/idx_format.h"
#include "weft/error.h"
#include "weft/ops.h"

namespace weft::data {

namespace {

namespace fs = std::filesystem;

constexpr int64_t kRows = 28, kCols = 28;
constexpr uint8_t kUbyte = 0x08;

// `root`/`stem` or `root`/`stem`.gz, whichever exists; the error lists both names.
std::string find_file(const fs::path& root, const std::string& stem, const char* what) {
  std::error_code ec;
  for (const std::string& name : {stem, stem + ".gz"}) {
    const fs::path p = root / name;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  if (!fs::is_directory(root, ec))
    WEFT_ERROR("MNIST: directory '", root.string(), "' does not exist (looking for the ", what,
               " file ", stem, " or ", stem, ".gz)");
  WEFT_ERROR("MNIST: no ", what, " file in '", root.string(), "': expected ", stem, " or ", stem,
             ".gz");
}

}  // namespace

MNIST::MNIST(const std::string& root, bool train, MNISTOptions options) {
  const std::string prefix = train ? "train" : "t10k";
  const std::string images_path = find_file(root, prefix + "-images-idx3-ubyte", "images");
  const std::string labels_path = find_file(root, prefix + "-labels-idx1-ubyte", "labels");
  WEFT_CHECK(!options.limit || *options.limit >= 0, "MNIST: limit must be >= 0, got ",
             *options.limit);
  WEFT_CHECK(!options.normalize || options.std > 0, "MNIST: normalize needs std > 0, got ",
             options.std);

  const IdxArray images = read_idx(images_path);
  WEFT_CHECK(images.type_code == kUbyte, "MNIST: ", images_path, " has IDX type code 0x", std::hex,
             int(images.type_code), std::dec, ", expected 0x08 (unsigned bytes)");
  WEFT_CHECK(images.dims.size() == 3 && images.dims[1] == kRows && images.dims[2] == kCols,
             "MNIST: ", images_path, " has dims ", shape_str(images.dims),
             ", expected (N, 28, 28)");
  const IdxArray labels = read_idx(labels_path);
  WEFT_CHECK(labels.type_code == kUbyte, "MNIST: ", labels_path, " has IDX type code 0x", std::hex,
             int(labels.type_code), std::dec, ", expected 0x08 (unsigned bytes)");
  WEFT_CHECK(labels.dims.size() == 1, "MNIST: ", labels_path, " has dims ", shape_str(labels.dims),
             ", expected (N)");
  WEFT_CHECK(images.dims[0] == labels.dims[0], "MNIST: ", images_path, " holds ", images.dims[0],
             " images but ", labels_path, " holds ", labels.dims[0], " labels");
  for (size_t i = 0; i < labels.data.size(); ++i)
    WEFT_CHECK(labels.data[i] <= 9, "MNIST: ", labels_path, ": label ", int(labels.data[i]),
               " of sample ", i, " is outside 0..9");

  const int64_t n = std::min(images.dims[0], options.limit.value_or(images.dims[0]));
  const int64_t pixels = kRows * kCols;
  images_ = empty({n, 1, kRows, kCols});
  labels_ = empty({n}, {.dtype = kInt64});
  float* img = images_.data_ptr<float>();
  int64_t* lab = labels_.data_ptr<int64_t>();
  // One multiply-add per pixel: x/255 then (x - mean)/std folded into scale and shift.
  const double scale = options.normalize ? 1.0 / (255.0 * options.std) : 1.0 / 255.0;
  const double shift = options.normalize ? -options.mean / options.std : 0.0;
  const uint8_t* src = images.data.data();
  for (int64_t i = 0; i < n * pixels; ++i)
    img[i] = static_cast<float>(static_cast<double>(src[i]) * scale + shift);
  for (int64_t i = 0; i < n; ++i) lab[i] = labels.data[static_cast<size_t>(i)];
}

Example MNIST::get(size_t index) const {
  WEFT_CHECK(index < size(), "MNIST: index ", index, " out of range for ", size(), " samples");
  const auto i = static_cast<int64_t>(index);
  return {images_[i], labels_[i]};
}

}  // namespace weft::data
