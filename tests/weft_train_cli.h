// Test helpers for weft-train end-to-end tests: a small Fashion-MNIST subset on disk, command
// lines (one process, 2 ranks under weft-run --standalone), fresh temp directories, the metrics
// CSV's rows and its reproducible columns, and raw file bytes (to damage checkpoints).
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "subprocess.h"
#include "weft/data/idx_format.h"

namespace weft::test {

inline const char* kFashionMnist = "/usr/share/datasets/fashion-mnist";

inline std::string weft_train() { return build_dir() + "/tools/weft-train"; }

// A directory holding the first 512 training and 200 test images of Fashion-MNIST as plain IDX
// files, made once per test process (and removed at its exit): a weft-train run on it loads a
// few hundred KB instead of inflating 30 MB of gzip, which dominates short sanitizer runs.
inline std::string fashion_subset() {
  struct Dir {
    std::string path;
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Dir dir{[] {
    const std::filesystem::path d =
        std::filesystem::temp_directory_path() / ("weft_train_data_" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    for (auto [prefix, n] : {std::pair{"train", 512}, std::pair{"t10k", 200}}) {
      for (const char* kind : {"-images-idx3-ubyte", "-labels-idx1-ubyte"}) {
        const std::string name = std::string(prefix) + kind;
        const weft::data::IdxArray a =
            weft::data::read_idx(std::string(kFashionMnist) + "/" + name + ".gz");
        std::vector<uint32_t> dims(a.dims.begin(), a.dims.end());
        const size_t per_item = a.data.size() / dims[0];
        dims[0] = static_cast<uint32_t>(n);
        std::string out = {0, 0, static_cast<char>(a.type_code), static_cast<char>(dims.size())};
        for (uint32_t v : dims)
          for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>(v >> s));
        out.append(reinterpret_cast<const char*>(a.data.data()), per_item * n);
        std::ofstream(d / name, std::ios::binary) << out;
      }
    }
    return d.string();
  }()};
  return dir.path;
}

// One weft-train process on the subset's first 256 training images (8 steps of 32).
inline std::string one_process_cmd(const std::string& dir, int epochs,
                                   const std::string& extra = "") {
  return weft_train() + " --data " + fashion_subset() +
         " --limit-train 256 --limit-test 100 --batch-size 32 --epochs " + std::to_string(epochs) +
         " --checkpoint-dir " + dir + " --no-progress " + extra;
}

// The sharded-checkpoint tests' run (--strategy zero and fsdp): 2 epochs of Adam on the
// subset's first 512 images, as n ranks under weft-run or as one process.
inline std::string adam_subset_args(const std::filesystem::path& dir, const std::string& extra) {
  return " --data " + fashion_subset() +
         " --limit-train 512 --limit-test 200 --batch-size 32 --epochs 2 --optimizer adam "
         "--checkpoint-dir " +
         dir.string() + " --no-progress " + extra;
}
inline std::string adam_subset_ranks(int n, const std::filesystem::path& dir,
                                     const std::string& extra) {
  return build_dir() + "/tools/weft-run --standalone --nproc-per-node " + std::to_string(n) + " " +
         weft_train() + adam_subset_args(dir, extra);
}
inline std::string adam_subset_one(const std::filesystem::path& dir, const std::string& extra) {
  return weft_train() + adam_subset_args(dir, extra);
}

// Two ranks under weft-run on this node (it picks and holds the port).
inline std::string two_rank_cmd(const std::string& dir, int epochs, const std::string& extra = "") {
  return build_dir() + "/tools/weft-run --standalone --nproc-per-node 2 " + weft_train() +
         " --limit-train 1536 --limit-test 500 --batch-size 32 --epochs " + std::to_string(epochs) +
         " --checkpoint-dir " + dir + " --no-progress " + extra;
}

inline std::vector<std::string> csv_rows(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> rows;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) rows.push_back(line);
  return rows;
}

// The columns of the metrics CSV: epoch,train_loss,test_loss,test_accuracy,images_per_sec,
// seconds,val_loss,val_accuracy (cells empty where not measured).
inline std::vector<std::string> csv_cells(const std::string& row) {
  std::vector<std::string> cells;
  size_t start = 0;
  for (size_t comma; (comma = row.find(',', start)) != std::string::npos; start = comma + 1)
    cells.push_back(row.substr(start, comma - start));
  cells.push_back(row.substr(start));
  return cells;
}

// The columns that must be reproducible: all but the timings (images/s, seconds).
inline std::string metrics_only(const std::string& row) {
  std::string out;
  const std::vector<std::string> cells = csv_cells(row);
  for (size_t i = 0; i < cells.size(); ++i)
    if (i != 4 && i != 5) out += cells[i] + ",";
  return out;
}

inline std::vector<std::string> metrics_only(const std::vector<std::string>& rows) {
  std::vector<std::string> out;
  for (const auto& r : rows) out.push_back(metrics_only(r));
  return out;
}

inline std::filesystem::path fresh_dir(const std::string& name) {
  std::filesystem::path d = std::filesystem::temp_directory_path() /
                            ("weft_train_" + name + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(d);
  return d;
}

inline std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

inline void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace weft::test
