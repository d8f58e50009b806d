// weft-train's CSV of per-epoch metrics, which rank 0 writes: started over at the beginning of a
// run with the rows of the epochs being resumed, then one row appended per epoch. Every write is
// checked: a failure (disk full, unwritable path) is a weft::Error naming the file, so rows are
// never lost silently.
#pragma once

#include <string>
#include <vector>

namespace weft_train {

class MetricsFile {
 public:
  static constexpr const char* kHeader =
      "epoch,train_loss,test_loss,test_accuracy,images_per_sec,seconds,val_loss,val_accuracy";

  explicit MetricsFile(std::string path) : path_(std::move(path)) {}
  // Rewrites the file as the header and `rows` (the epochs a resumed run keeps).
  void start(std::vector<std::string> rows);
  void append(const std::string& row);
  // Every row written so far, header excluded: what a checkpoint stores.
  const std::vector<std::string>& rows() const { return rows_; }

  // The rows of epochs 1..epoch in the file at `path` as it is (none when it is unreadable).
  static std::vector<std::string> read_rows_up_to(const std::string& path, int epoch);

 private:
  void write(const std::string& text, bool truncate);

  std::string path_;
  std::vector<std::string> rows_;
};

}  // namespace weft_train
