// Test helpers for weft-train end-to-end tests: command lines (one process, 2 ranks under
// weft-run --standalone), fresh temp directories, the metrics CSV's rows and its reproducible
// columns, and raw file bytes (to damage checkpoints).
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "subprocess.h"

namespace weft::test {

inline const char* kFashionMnist = "/usr/share/datasets/fashion-mnist";

inline std::string weft_train() { return build_dir() + "/tools/weft-train"; }

// One weft-train process on a small subset: 256 training images make 8 steps of 32.
inline std::string one_process_cmd(const std::string& dir, int epochs,
                                   const std::string& extra = "") {
  return weft_train() + " --limit-train 256 --limit-test 100 --batch-size 32 --epochs " +
         std::to_string(epochs) + " --checkpoint-dir " + dir + " --no-progress " + extra;
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

// The columns that must be reproducible: epoch, train loss, test loss, accuracy.
inline std::string metrics_only(const std::string& row) {
  std::stringstream ss(row);
  std::string out, cell;
  for (int i = 0; i < 4 && std::getline(ss, cell, ','); ++i) out += cell + ",";
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
