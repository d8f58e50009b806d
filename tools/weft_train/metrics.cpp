#include "metrics.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "weft/error.h"

namespace weft_train {

void MetricsFile::start(std::vector<std::string> rows) {
  std::string text = std::string(kHeader) + "\n";
  for (const auto& r : rows) text += r + "\n";
  write(text, /*truncate=*/true);
  rows_ = std::move(rows);
}

void MetricsFile::append(const std::string& row) {
  write(row + "\n", /*truncate=*/false);
  rows_.push_back(row);
}

std::vector<std::string> MetricsFile::read_rows_up_to(const std::string& path, int epoch) {
  std::vector<std::string> rows;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line))
    if (!line.empty() && std::atoi(line.c_str()) <= epoch) rows.push_back(line);
  return rows;
}

// POSIX calls rather than a stream, so that each failure is seen with its errno (a stream
// reports /dev/full's ENOSPC only as a bad bit, if anyone looks).
void MetricsFile::write(const std::string& text, bool truncate) {
  const int fd =
      ::open(path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : O_APPEND), 0666);
  WEFT_CHECK(fd >= 0, "cannot open the metrics file '", path_,
             "' for writing: ", std::strerror(errno), " (--metrics)");
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = w < 0 ? errno : EIO;
      ::close(fd);
      WEFT_ERROR("cannot write the metrics file '", path_, "': ", std::strerror(err),
                 " (--metrics)");
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  WEFT_CHECK(::close(fd) == 0, "cannot write the metrics file '", path_,
             "': ", std::strerror(errno), " (--metrics)");
}

}  // namespace weft_train
